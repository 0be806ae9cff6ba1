"""The improvement loop: what humans answered becomes training data, what the bot declined
becomes a list of gaps in the knowledge base.

python -m kefu.improvement [--month 2026-11] [--out DIR]

Once a month (the export Lambda in AWS, this CLI locally) the closed tickets created in the month
before are written as chat-format examples to `training/YYYY-MM/handovers.jsonl`, and the
questions the bot declined in it, grouped by the topic they came nearest to, to
`reports/YYYY-MM/knowledge-gaps.json`.

An example is the conversation of one ticket: a system prompt, then the customer's messages as
`user` and the bot's and agents' as `assistant`, consecutive messages of one role merged so that
the roles alternate, starting with the customer. Only a conversation that ends with an agent's
reply teaches anything; the others are dropped. Every text is masked again, as the chat turn
masked it: agents type phone numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kefu.errors import DependencyUnavailable
from kefu.masking import mask_personal_data

if TYPE_CHECKING:
    from kefu.ports import Insights, TicketStore
    from kefu.tickets import Ticket, TurnRecord

SYSTEM_PROMPT = (
    "You are the shop's customer-service assistant. Answer in the customer's language, "
    "Chinese or English, briefly, politely and precisely, from the shop's policies and the "
    "customer's order; never invent details. 你是本店的客服助手：用顾客的语言（中文或英文）"
    "简洁、礼貌、准确地回答。"
)
ROLES = {"customer": "user", "bot": "assistant", "agent": "assistant"}
UNCATEGORISED = "uncategorised"
QUESTIONS_PER_CATEGORY = 20
# How long a hand-over may stay open and still be exported in the month it is closed.
OPEN_FOR_AT_MOST = timedelta(days=92)
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_SPACE = re.compile(r"\s+")


def training_examples(
    tickets: Iterable[Ticket], *, extra: Sequence[re.Pattern[str]] = ()
) -> list[dict[str, Any]]:
    """One chat-format example per closed ticket an agent replied on, up to the agent's last
    reply, every text masked (also by the deployment's `extra` patterns)."""
    examples = []
    for ticket in tickets:
        if ticket.status != "closed":
            continue
        thread = [m for m in (*ticket.transcript, *ticket.messages) if m.text.strip()]
        # It ends with the agent's last reply: what the customer wrote after it ("谢谢")
        # has no answer to learn from.
        last_reply = max((n for n, m in enumerate(thread) if m.author == "agent"), default=None)
        if last_reply is None:
            continue
        thread = thread[: last_reply + 1]
        turns: list[dict[str, str]] = []
        for message in thread:
            role = ROLES[message.author]
            if not turns and role == "assistant":
                continue  # a greeting before the customer spoke answers nothing
            text = mask_personal_data(message.text.strip(), language=ticket.language, extra=extra)
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + text
            else:
                turns.append({"role": role, "content": text})
        if len(turns) < 2:
            continue
        examples.append(
            {
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, *turns],
                "metadata": {
                    "ticket_id": ticket.ticket_id,
                    "trigger": ticket.trigger,
                    "language": ticket.language,
                    "intent": ticket.intent,
                    "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
                },
            }
        )
    return examples


def knowledge_gaps(turns: Iterable[TurnRecord]) -> list[dict[str, Any]]:
    """The declined questions by category, the most declined category first; within each, the
    distinct questions (told apart regardless of case and spacing) with how often each was
    asked, the most asked first, at most `QUESTIONS_PER_CATEGORY`."""
    declined: Counter[str] = Counter()
    asked: dict[str, Counter[str]] = {}
    wording: dict[str, str] = {}  # the first spelling seen of each question, spaces collapsed
    for turn in turns:
        if turn.outcome != "declined":
            continue
        category = turn.category or UNCATEGORISED
        declined[category] += 1
        question = _SPACE.sub(" ", turn.question).strip()
        if not question:
            continue
        key = question.casefold()
        wording.setdefault(key, question)
        asked.setdefault(category, Counter())[key] += 1
    gaps = []
    for category, count in sorted(declined.items(), key=lambda item: (-item[1], item[0])):
        questions = sorted(asked.get(category, Counter()).items(), key=lambda q: (-q[1], q[0]))
        gaps.append(
            {
                "category": category,
                "declined": count,
                "distinct_questions": len(questions),
                "questions": [
                    {"question": wording[key], "count": n}
                    for key, n in questions[:QUESTIONS_PER_CATEGORY]
                ],
            }
        )
    return gaps


def previous_month(now: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month before the one `now` (naive: UTC) falls in."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    end = datetime(now.year, now.month, 1, tzinfo=UTC)
    start = (end - timedelta(days=1)).replace(day=1)
    return start, end


def month_of(text: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the month named `YYYY-MM`. Raises ValueError for anything else."""
    match = _MONTH.match(text.strip())
    if match is None:
        raise ValueError(f"not a month (YYYY-MM): {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else start.replace(month=month + 1)
    return start, end


class ExportSink(Protocol):
    """Where the export's files go: a folder locally, the export bucket in AWS."""

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Store `body` under `key` (a `/`-separated path), replacing what was there. Raises
        `DependencyUnavailable` when it cannot."""
        ...


class DirectorySink:
    """Writes each key as a file under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, body: bytes, content_type: str) -> None:
        path = self.root.joinpath(*key.split("/"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        except OSError as exc:
            raise DependencyUnavailable(f"cannot write {path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.root)!r})"


class S3Sink:
    """Puts each key as an object in the export bucket."""

    def __init__(self, bucket: str, *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.bucket = bucket
        self.client = client

    def put(self, key: str, body: bytes, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What one month's export wrote: `tickets` closed tickets read, `examples` of them kept;
    `declined` questions in `categories` categories (None without an insights store)."""

    month: str
    since: datetime
    until: datetime
    tickets: int
    examples: int
    training_key: str
    declined: int | None = None
    categories: int | None = None
    gaps_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat()
        data["until"] = self.until.isoformat()
        return data


def export_month(
    *,
    tickets: TicketStore,
    insights: Insights | None,
    sink: ExportSink,
    start: datetime,
    end: datetime,
    extra: Sequence[re.Pattern[str]] = (),
) -> ExportSummary:
    """Write the training examples of the tickets closed in [start, end) and, with an
    insights store, the knowledge-gap report of the turns in it. Raises
    `DependencyUnavailable` when a store or the sink fails."""
    month = start.strftime("%Y-%m")
    # The store finds tickets by when they were created: those closed in the month were
    # created before its end, at most `OPEN_FOR_AT_MOST` before its start.
    closed = [
        ticket
        for ticket in tickets.by_status("closed", since=start - OPEN_FOR_AT_MOST, until=end)
        if ticket.closed_at is not None and start <= ticket.closed_at < end
    ]
    examples = training_examples(closed, extra=extra)
    training_key = f"training/{month}/handovers.jsonl"
    lines = "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples)
    sink.put(training_key, lines.encode("utf-8"), "application/x-ndjson")
    summary = ExportSummary(
        month=month,
        since=start,
        until=end,
        tickets=len(closed),
        examples=len(examples),
        training_key=training_key,
    )
    if insights is None:
        return summary

    turns = insights.turns(start, end)
    gaps = knowledge_gaps(turns)
    declined = sum(gap["declined"] for gap in gaps)
    gaps_key = f"reports/{month}/knowledge-gaps.json"
    report = {
        "month": month,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "turns": len(turns),
        "declined": declined,
        "categories": gaps,
    }
    body = json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8")
    sink.put(gaps_key, body, "application/json")
    return replace(summary, declined=declined, categories=len(gaps), gaps_key=gaps_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kefu.improvement",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--month", help="the month to export, YYYY-MM (default: last month)")
    parser.add_argument(
        "--out", type=Path, help="the folder to write to (default: <KEFU_DATA_DIR>/exports)"
    )
    args = parser.parse_args(argv)
    try:
        start, end = month_of(args.month) if args.month else previous_month(datetime.now(UTC))
    except ValueError as exc:
        parser.error(str(exc))

    from kefu import bootstrap
    from kefu.errors import ConfigurationError

    settings = bootstrap.get_settings()
    out: Path = args.out or settings.data_dir / "exports"
    try:
        tickets = bootstrap.build_tickets(settings)
        insights = bootstrap.build_insights(settings)
    except ConfigurationError as exc:
        print(f"python -m kefu.improvement: {exc}", file=sys.stderr)
        return 2
    try:
        summary = export_month(
            tickets=tickets,
            insights=insights,
            sink=DirectorySink(out),
            start=start,
            end=end,
            extra=[re.compile(pattern) for pattern in settings.mask_patterns],
        )
    except DependencyUnavailable as exc:
        print(f"python -m kefu.improvement: {exc}", file=sys.stderr)
        return 1
    print(
        f"{summary.month}: {summary.examples} training examples "
        f"from {summary.tickets} closed tickets -> {out / summary.training_key}"
    )
    if summary.gaps_key is None:
        print(f"{summary.month}: no knowledge-gap report (insights are off)")
    else:
        print(
            f"{summary.month}: {summary.declined} declined questions "
            f"in {summary.categories} categories -> {out / summary.gaps_key}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
