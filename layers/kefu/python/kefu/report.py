"""The service report: how the bot did over a window, against the service targets.

python -m kefu.report [--since ISO] [--until ISO] [--days N] [--json]

Read from the insights store (a record per turn and per rating), over [since, until): until
defaults to now, since to `--days` (30) before it. A session is resolved at first contact when
none of its turns handed it over and none of its ratings is below 3. Response times are the
turns' latencies; satisfaction the share of ratings of 4 or 5 among the ratings given. Each
measure is checked against its target: first-contact resolution ≥ 85 %, average response
≤ 3 s, satisfaction ≥ 90 %.

The exit status is 0 whenever a report is printed, targets met or not; 2 on bad arguments or
settings, 1 when the insights store cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kefu.tickets import FeedbackRecord, TurnRecord

FCR_TARGET = 0.85
RESPONSE_TARGET_MS = 3000.0
SATISFACTION_TARGET = 0.90
# A rating below this puts its session among the unresolved ones; at or above SATISFIED, the
# customer is counted as satisfied.
LOW_RATING = 3
SATISFIED = 4
HANDED_OVER = "handed_over"


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One measure against its target; `met` is None when there was nothing to measure."""

    name: str
    value: float | None
    target: float
    at_least: bool  # the target is a floor (a share) rather than a ceiling (a time)
    met: bool | None


@dataclass(frozen=True, slots=True)
class Report:
    """The measures of one window. A share or a time is None when nothing was recorded."""

    sessions: int
    turns: int
    resolved_sessions: int
    first_contact_resolution: float | None
    average_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    ratings: int
    satisfied_ratings: int
    satisfaction: float | None
    handovers: tuple[tuple[str, int], ...]  # by trigger, most frequent first
    since: datetime | None = None
    until: datetime | None = None

    @property
    def targets(self) -> tuple[TargetCheck, ...]:
        return (
            _check("first_contact_resolution", self.first_contact_resolution, FCR_TARGET, True),
            _check("average_response_ms", self.average_ms, RESPONSE_TARGET_MS, False),
            _check("satisfaction", self.satisfaction, SATISFACTION_TARGET, True),
        )


def _check(name: str, value: float | None, target: float, at_least: bool) -> TargetCheck:
    met = None if value is None else (value >= target if at_least else value <= target)
    return TargetCheck(name=name, value=value, target=target, at_least=at_least, met=met)


def _percentile(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest recorded value that `share` of them reach."""
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def compute_report(
    turns: Iterable[TurnRecord],
    feedback: Iterable[FeedbackRecord],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """The report over these records (`since` and `until` only label it)."""
    turns = list(turns)
    feedback = list(feedback)
    sessions = {turn.session_id for turn in turns}
    # A turn carries its trigger when it hands over; the turns after it, while a human has
    # the conversation, are marked handed over without one.
    handed_over = {
        turn.session_id for turn in turns if turn.handover_trigger or turn.outcome == HANDED_OVER
    }
    low_rated = {record.session_id for record in feedback if record.rating < LOW_RATING}
    resolved = sessions - handed_over - low_rated

    latencies = sorted(turn.latency_ms for turn in turns)
    satisfied = sum(1 for record in feedback if record.rating >= SATISFIED)
    triggers = Counter(turn.handover_trigger for turn in turns if turn.handover_trigger)
    # A rating below 3 hands over a session that no human has yet.
    triggers["low_rating"] += len(low_rated - handed_over)
    triggers = +triggers  # drop the zero count
    return Report(
        sessions=len(sessions),
        turns=len(turns),
        resolved_sessions=len(resolved),
        first_contact_resolution=len(resolved) / len(sessions) if sessions else None,
        average_ms=sum(latencies) / len(latencies) if latencies else None,
        p50_ms=_percentile(latencies, 0.50) if latencies else None,
        p95_ms=_percentile(latencies, 0.95) if latencies else None,
        ratings=len(feedback),
        satisfied_ratings=satisfied,
        satisfaction=satisfied / len(feedback) if feedback else None,
        handovers=tuple(sorted(triggers.items(), key=lambda item: (-item[1], item[0]))),
        since=since,
        until=until,
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1000:.2f} s"


def _verdict(check: TargetCheck) -> str:
    if check.met is None:
        return "no data"
    return "met" if check.met else "not met"


def render(report: Report) -> str:
    """The report as a text table, each target marked met or not met."""
    fcr, response, satisfaction = report.targets
    lines = []
    if report.since is not None and report.until is not None:
        lines.append(f"Kefu report {report.since.isoformat()} → {report.until.isoformat()}")
        lines.append("")
    rows = [
        ("Sessions", str(report.sessions), "", ""),
        ("Turns", str(report.turns), "", ""),
        (
            "First-contact resolution",
            _share(report.first_contact_resolution),
            f"≥ {FCR_TARGET * 100:.0f} %",
            _verdict(fcr),
        ),
        (
            "Average response",
            _seconds(report.average_ms),
            f"≤ {RESPONSE_TARGET_MS / 1000:.0f} s",
            _verdict(response),
        ),
        ("Response p50", _seconds(report.p50_ms), "", ""),
        ("Response p95", _seconds(report.p95_ms), "", ""),
        (
            f"Satisfaction ({report.ratings} ratings)",
            _share(report.satisfaction),
            f"≥ {SATISFACTION_TARGET * 100:.0f} %",
            _verdict(satisfaction),
        ),
    ]
    header = ("Measure", "Value", "Target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    lines.append("")
    lines.append(f"Hand-overs by trigger ({sum(n for _, n in report.handovers)})")
    if not report.handovers:
        lines.append("  none")
    width = max((len(trigger) for trigger, _ in report.handovers), default=0)
    lines.extend(f"  {trigger.ljust(width)}  {count}" for trigger, count in report.handovers)
    return "\n".join(lines)


def report_json(report: Report) -> str:
    """The report as JSON: its measures, the hand-overs by trigger, and the target checks."""
    data: dict[str, Any] = {
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "sessions": report.sessions,
        "turns": report.turns,
        "resolved_sessions": report.resolved_sessions,
        "first_contact_resolution": report.first_contact_resolution,
        "average_ms": report.average_ms,
        "p50_ms": report.p50_ms,
        "p95_ms": report.p95_ms,
        "ratings": report.ratings,
        "satisfied_ratings": report.satisfied_ratings,
        "satisfaction": report.satisfaction,
        "handovers": dict(report.handovers),
        "targets": {
            check.name: {
                "value": check.value,
                "target": check.target,
                "comparison": ">=" if check.at_least else "<=",
                "met": check.met,
            }
            for check in report.targets
        },
    }
    return json.dumps(data, ensure_ascii=False, indent=2)


def _instant(text: str) -> datetime:
    """An ISO 8601 date or time; without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of days: {text!r}")
    return days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kefu.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--since", type=_instant, help="start of the window (default: --days ago)")
    parser.add_argument("--until", type=_instant, help="end of the window (default: now)")
    parser.add_argument("--days", type=_days, default=30, help="the window's length (default 30)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    until: datetime = args.until or datetime.now(UTC)
    since: datetime = args.since or until - timedelta(days=args.days)
    if since >= until:
        parser.error("--since must be before --until")

    # The store's adapter (and what it imports) is loaded only once the arguments are good.
    from kefu import bootstrap
    from kefu.errors import ConfigurationError, DependencyUnavailable

    try:
        insights = bootstrap.build_insights(bootstrap.get_settings())
    except ConfigurationError as exc:
        print(f"python -m kefu.report: {exc}", file=sys.stderr)
        return 2
    if insights is None:
        print("python -m kefu.report: insights are off (KEFU_INSIGHTS=none)", file=sys.stderr)
        return 2
    try:
        report = compute_report(
            insights.turns(since, until), insights.feedback(since, until), since=since, until=until
        )
    except DependencyUnavailable as exc:
        print(f"python -m kefu.report: the insights store cannot be read: {exc}", file=sys.stderr)
        return 1
    print(report_json(report) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
