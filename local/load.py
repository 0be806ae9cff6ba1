"""`python -m local.load` (`make load`): the local stack under many conversations at once.

`--sessions` customers (100) chat at the same moment over loopback, each sending `--turns`
messages (20) one after another, each waiting for the answer as a customer does. What they
write is a seeded mix (`QuestionMix`): the knowledge base's FAQ questions and paraphrases drawn
Zipf-like (the popular ones repeat across conversations, as in real traffic), questions it does
not cover, follow-ups, order look-ups, small talk and requests for a human, in Chinese, English
and the two mixed. Afterwards every conversation is read back: each answered turn must be
stored, in order (the hand-over threads through the API; the session memory and the turn
records in the stores when the data folder is known). Any non-2xx response, connection error,
timeout, malformed response or missing turn is an error; the exit status is 1 if there is one.

Without `--url` it starts the local stack itself (`python -m local` on a free loopback port,
its data in a temporary folder, never the developer's `.kefu`) and stops it afterwards. The
index it builds (minutes with e5) is kept in `.build/load/` for the next run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from kb_ingest import SAMPLE_KB_PATHS, faq_questions
from kefu.adapters.orders import SAMPLE_ORDERS
from kefu.models import ChatResponse, SessionMessages
from kefu.text import Language

ROOT = Path(__file__).parents[1]
# The local stack's index, kept between runs: indexing the sample KB with e5 takes minutes.
INDEX_CACHE = ROOT / ".build" / "load"
STARTUP_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 60.0

# --- the mix ------------------------------------------------------------------------------
# A customer writes in one language throughout: most in Chinese, many in English, some in
# Chinese with English words ("注销 account 要几天").
Tongue = Literal["zh", "en", "mixed"]
LANGUAGE_SHARES: dict[Tongue, float] = {"zh": 0.5, "en": 0.4, "mixed": 0.1}
Kind = Literal["faq", "new", "follow_up", "small_talk", "order", "human"]
KINDS: tuple[Kind, ...] = ("faq", "new", "follow_up", "small_talk", "order", "human")
# After a KB question, the share of next messages that follow it up ("那运费呢？", "and how long
# does that take?"), read within its topic: about 8 % of all messages.
FOLLOW_UP_SHARE = 0.15
# What every other message is (with the follow-ups: about 61 % KB questions, 12 % new ones,
# 11 % small talk, 7 % orders, 1 % requests for a human).
KIND_SHARES: dict[Kind, float] = {
    # A KB question or paraphrase, Zipf-drawn: the popular ones repeat across conversations
    # (the answer cache's hits), the long tail is asked once.
    "faq": 0.67,
    # A question the KB does not hold, worded afresh each time: declined (two in a row hand
    # over) or answered from the nearest entry; never a cache hit.
    "new": 0.13,
    # "hi", "谢谢", "are you a bot?": answered by rules.
    "small_talk": 0.12,
    # An order number of the sample order book (`make run` serves it), or now and then one it
    # does not know.
    "order": 0.07,
    # "转人工": handed over; the conversation's later messages go to the ticket's thread.
    "human": 0.01,
}
ZIPF_EXPONENT = 1.1  # as the answer cache's benchmark (tests/bench/test_cache_bench.py)
UNKNOWN_ORDER_SHARE = 0.2  # of order questions
UNKNOWN_ORDER_ID = "20230101-0000"
# A Chinese message with English words in it.
_MIXED = re.compile(r"[\u4e00-\u9fff].*[A-Za-z]{2}|[A-Za-z]{2}.*[\u4e00-\u9fff]")

_FOLLOW_UPS: dict[Tongue, tuple[str, ...]] = {
    "zh": ("那运费呢？", "那要多久？", "那如果超过7天呢？", "这个要多少钱？", "那偏远地区呢？"),
    "en": (
        "and how long does that take?",
        "what about the shipping fee?",
        "and what if it's been more than 7 days?",
        "how much does that cost?",
        "and for remote areas?",
    ),
    "mixed": ("那 shipping fee 呢？", "那 refund 要多久？", "那 express 呢？"),
}
_SMALL_TALK: dict[Tongue, tuple[str, ...]] = {
    "zh": ("你好", "在吗", "谢谢", "好的，谢谢", "你是机器人吗", "再见"),
    "en": ("hi", "hello", "thanks!", "thank you", "are you a bot?", "bye"),
    "mixed": ("hi 你好", "thanks 谢谢", "OK 谢谢啦"),
}
_HUMAN: dict[Tongue, tuple[str, ...]] = {
    "zh": ("转人工", "我要人工客服"),
    "en": ("can I talk to a real person?", "human agent please"),
    "mixed": ("转人工 please", "我要 human agent"),
}
_ORDERS: dict[Tongue, tuple[str, ...]] = {
    "zh": ("我的订单{order}到哪了？", "订单号{order}，什么时候发货？", "帮我查一下{order}的物流"),
    "en": ("Where is my order {order}?", "Has order {order} shipped yet?", "order {order} status"),
    "mixed": ("order {order} 到哪了", "帮我 check 一下订单 {order}"),
}
# Questions the KB does not hold, filled in afresh each time.
_NEW: dict[Tongue, tuple[str, ...]] = {
    "zh": (
        "你们在{city_zh}有实体店吗？",
        "{product_zh}能和{device}一起用吗？",
        "{product_zh}有{colour_zh}的吗？",
        "{product_zh}{day_zh}之前会补货吗？",
        "可以在{product_zh}上刻我的名字吗？",
        "我能去{city_zh}的仓库自己取{product_zh}吗？",
    ),
    "en": (
        "Do you have a physical store in {city}?",
        "Is the {product} compatible with {device}?",
        "Do you sell the {product} in {colour}?",
        "Will the {product} be back in stock before {day}?",
        "Can you engrave my name on the {product}?",
        "Can I collect the {product} myself from your {city} warehouse?",
    ),
    "mixed": (
        "{product_zh}支持{device}吗？",
        "{city_zh}有 offline store 吗？",
        "{product_zh}有 {colour} 的吗？",
    ),
}
_FILLERS: dict[str, tuple[str, ...]] = {
    "city": ("Lhasa", "Harbin", "Xiamen", "Kunming", "Urumqi", "Sanya", "Datong", "Lanzhou"),
    "city_zh": ("拉萨", "哈尔滨", "厦门", "昆明", "乌鲁木齐", "三亚", "大同", "兰州"),
    "product": ("rice cooker", "desk lamp", "air fryer", "down jacket", "yoga mat", "kettle"),
    "product_zh": ("电饭煲", "台灯", "空气炸锅", "羽绒服", "瑜伽垫", "电水壶", "蓝牙音箱"),
    "device": ("iPhone 15", "MacBook Air", "Switch", "Galaxy S24", "Kindle", "iPad mini"),
    "colour": ("teal", "burgundy", "olive green", "lilac", "charcoal", "mustard"),
    "colour_zh": ("墨绿色", "酒红色", "香槟金", "雾霾蓝", "燕麦色", "薄荷绿"),
    "day": ("Friday", "the weekend", "Singles' Day", "Chinese New Year", "next month"),
    "day_zh": ("周五", "周末", "双十一", "春节", "下个月"),
}


@dataclass(frozen=True, slots=True)
class Ask:
    """One message a customer sends: what kind of message it is, in which tongue, and its text."""

    kind: Kind
    tongue: Tongue
    text: str


class QuestionMix:
    """Seeded conversations over a KB's FAQ questions: conversation `n` of seed `s` is always
    the same, whichever others are drawn."""

    def __init__(
        self,
        questions: Sequence[tuple[str, Language]],
        *,
        seed: int,
        order_ids: Sequence[str] = (),
    ) -> None:
        self.seed = seed
        self.order_ids = tuple(order_ids)
        pools: dict[Tongue, list[str]] = {
            "zh": [text for text, language in questions if language == "zh"],
            "en": [text for text, language in questions if language == "en"],
            "mixed": [text for text, _ in questions if _MIXED.search(text)],
        }
        everything = [text for text, _ in questions]
        rng = random.Random(f"{seed}/popularity")
        self._pools: dict[Tongue, tuple[list[str], list[float]]] = {}
        for tongue, pool in pools.items():
            ranked = list(pool or everything)
            rng.shuffle(ranked)  # which question is popular is not the file's order
            # P(the question ranked r) ∝ 1 / r ** ZIPF_EXPONENT
            weights = (1.0 / rank**ZIPF_EXPONENT for rank in range(1, len(ranked) + 1))
            self._pools[tongue] = (ranked, list(accumulate(weights)))

    def conversation(self, number: int, turns: int) -> list[Ask]:
        rng = random.Random(f"{self.seed}/conversation/{number}")
        tongues, tongue_weights = zip(*LANGUAGE_SHARES.items(), strict=True)
        tongue: Tongue = rng.choices(tongues, tongue_weights)[0]
        kinds, kind_weights = zip(*KIND_SHARES.items(), strict=True)
        asks: list[Ask] = []
        for _ in range(turns):
            kind: Kind = rng.choices(kinds, kind_weights)[0]
            if asks and asks[-1].kind == "faq" and rng.random() < FOLLOW_UP_SHARE:
                kind = "follow_up"
            elif kind == "order" and not self.order_ids:
                kind = "faq"
            asks.append(Ask(kind, tongue, self._text(kind, tongue, rng)))
        return asks

    def _text(self, kind: Kind, tongue: Tongue, rng: random.Random) -> str:
        if kind == "faq":
            ranked, cumulative = self._pools[tongue]
            return rng.choices(ranked, cum_weights=cumulative)[0]
        if kind == "new":
            fillers = {name: rng.choice(values) for name, values in _FILLERS.items()}
            return rng.choice(_NEW[tongue]).format(**fillers)
        if kind == "order":
            known = rng.random() >= UNKNOWN_ORDER_SHARE
            order = rng.choice(self.order_ids) if known else UNKNOWN_ORDER_ID
            return rng.choice(_ORDERS[tongue]).format(order=order)
        texts = {"follow_up": _FOLLOW_UPS, "small_talk": _SMALL_TALK, "human": _HUMAN}[kind]
        return rng.choice(texts[tongue])


def sample_order_ids() -> list[str]:
    """The order numbers of the sample order book the local stack serves."""
    orders = json.loads(SAMPLE_ORDERS.read_text(encoding="utf-8"))["orders"]
    return [str(order["order_id"]) for order in orders]


# --- the customers ------------------------------------------------------------------------


@dataclass(slots=True)
class TurnResult:
    """One message sent and what came of it: the answer, or the error's kind."""

    ask: Ask
    sent_at: float  # time.perf_counter()
    latency_s: float
    reply: ChatResponse | None = None
    error: str | None = None


@dataclass(slots=True)
class Conversation:
    number: int
    asks: list[Ask]
    results: list[TurnResult] = field(default_factory=list)

    @property
    def session_id(self) -> str | None:
        return next((r.reply.session_id for r in self.results if r.reply), None)

    @property
    def answered(self) -> list[TurnResult]:
        return [result for result in self.results if result.reply is not None]


class Client:
    """One customer's HTTP/1.1 connection, kept alive between messages as a browser keeps it."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """The response's status and body; raises OSError or HTTPException on a failure."""
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, self.timeout)
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()  # a failed connection is not reused
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _send(client: Client, ask: Ask, session_id: str | None) -> TurnResult:
    body: dict[str, str] = {"message": ask.text}
    if session_id:
        body["session_id"] = session_id
    started = time.perf_counter()
    try:
        status, data = client.request("POST", "/v1/chat", body)
    except TimeoutError:
        return TurnResult(ask, started, time.perf_counter() - started, error="timeout")
    except (OSError, http.client.HTTPException) as exc:
        error = f"connection ({type(exc).__name__})"
        return TurnResult(ask, started, time.perf_counter() - started, error=error)
    latency = time.perf_counter() - started
    if not 200 <= status < 300:
        return TurnResult(ask, started, latency, error=f"http {status}")
    try:
        reply = ChatResponse.model_validate_json(data)
    except ValidationError:
        return TurnResult(ask, started, latency, error="malformed response")
    if session_id and reply.session_id != session_id:
        return TurnResult(ask, started, latency, reply, error="answered in another session")
    return TurnResult(ask, started, latency, reply)


def _converse(
    url: str, conversation: Conversation, start: threading.Barrier, timeout: float
) -> None:
    client = Client(url, timeout)
    start.wait()
    try:
        for ask in conversation.asks:
            conversation.results.append(_send(client, ask, conversation.session_id))
    finally:
        client.close()


# --- reading the conversations back -------------------------------------------------------


def check_threads(url: str, conversations: Sequence[Conversation], timeout: float) -> Counter[str]:
    """Through the API: every conversation can be read back, and what its customer wrote after
    a hand-over is in the thread the agents answer, in order. The errors found, by kind."""
    errors: Counter[str] = Counter()
    client = Client(url, timeout)
    try:
        for conversation in conversations:
            session_id = conversation.session_id
            if session_id is None:
                continue
            try:
                status, data = client.request("GET", f"/v1/sessions/{session_id}/messages")
            except (OSError, http.client.HTTPException):
                errors["read back: connection"] += 1
                continue
            if status != 200:
                errors[f"read back: http {status}"] += 1
                continue
            try:
                thread = SessionMessages.model_validate_json(data)
            except ValidationError:
                errors["read back: malformed response"] += 1
                continue
            errors.update(_thread_errors(conversation, thread))
    finally:
        client.close()
    return errors


def _thread_errors(conversation: Conversation, thread: SessionMessages) -> Counter[str]:
    errors: Counter[str] = Counter()
    answered = conversation.answered
    first = next((n for n, r in enumerate(answered) if r.reply and r.reply.handover), None)
    if first is None:
        return errors
    if not thread.handed_over:
        errors["handed over, but the session is not"] += 1
    written = {
        message.message_id: (position, message.text)
        for position, message in enumerate(thread.messages)
        if message.author == "customer"
    }
    positions = []
    for result in answered[first + 1 :]:
        assert result.reply is not None
        found = written.get(f"{result.reply.turn_id}-q")
        if found is None or found[1] != result.ask.text:
            errors["missing turn (hand-over thread)"] += 1
        else:
            positions.append(found[0])
    if positions != sorted(positions):
        errors["turns out of order (hand-over thread)"] += 1
    return errors


def check_stores(
    data_dir: Path, conversations: Sequence[Conversation], since: datetime
) -> Counter[str]:
    """In the local stack's stores: each session remembers every answered turn (its count, and
    the recent ones verbatim, in order), and each turn has its record for the reports."""
    from kefu.adapters.insights import SqliteInsights
    from kefu.adapters.sessions import SqliteSessionStore
    from kefu.settings import Settings

    settings = Settings(data_dir=data_dir)
    sessions = SqliteSessionStore(settings.sessions_path)
    recorded: dict[str, list[str]] = {}
    for record in SqliteInsights(settings.insights_path).turns(
        since, datetime.now(UTC) + timedelta(minutes=1)
    ):
        recorded.setdefault(record.session_id, []).append(record.turn_id)
    errors: Counter[str] = Counter()
    for conversation in conversations:
        session_id = conversation.session_id
        if session_id is None:
            continue
        answered = [
            (r.reply.turn_id, r.ask.text, r.reply.answer) for r in conversation.answered if r.reply
        ]
        ids = [turn_id for turn_id, _, _ in answered]
        records = recorded.get(session_id, [])
        missing = len(set(ids) - set(records))
        if missing:
            errors["missing turn (turn records)"] += missing
        elif [turn_id for turn_id in records if turn_id in set(ids)] != ids:
            errors["turns out of order (turn records)"] += 1
        session = sessions.get(session_id)
        if session is None:
            errors["missing turn (session)"] += len(ids)
            continue
        if session.turn_count < len(ids):
            errors["missing turn (session)"] += len(ids) - session.turn_count
        kept = [(t.turn_id, t.message, t.answer) for t in session.turns]
        if kept != answered[len(answered) - len(kept) :]:
            errors["turns out of order or changed (session)"] += 1
    return errors


# --- the local stack ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (with what its write-ahead log holds), written to
    a temporary name first so that no reader sees half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(partial)) as dst,
    ):
        src.backup(dst)
    partial.replace(target)


class LocalStack:
    """`python -m local` as `make run` starts it, on a free loopback port with its data in
    `data_dir`, from start until it answers GET /v1/health, to stop. What it prints is kept,
    and the errors it logs (and any traceback) are counted."""

    def __init__(
        self,
        data_dir: Path,
        *,
        kb: Sequence[Path] | None = None,
        index_cache: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        echo: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.kb = kb
        self.index_cache = index_cache
        self.startup_timeout = startup_timeout
        self.echo = echo
        self.url = ""
        self.output: list[str] = []
        self.errors: Counter[str] = Counter()
        self._serving = False
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cached = self._index_files()
        if cached and cached[0].exists():
            _copy_sqlite(cached[0], cached[1])
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "KEFU_DATA_DIR": str(self.data_dir)}
        command = [sys.executable, "-m", "local", "--port", str(port)]
        if self.kb:
            command += ["--kb", *map(str, self.kb)]
        self._process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="local-stack-output", daemon=True)
        self._reader.start()
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        self._serving = True

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._process = None
        cached = self._index_files()
        if self._serving and cached and cached[1].exists():
            _copy_sqlite(cached[1], cached[0])  # for the next run: unchanged, it is not redone

    def _index_files(self) -> tuple[Path, Path] | None:
        """The index kept between runs, and the one the stack serves, if it has one."""
        from kefu.settings import Settings

        settings = Settings(data_dir=self.data_dir)
        if self.index_cache is None or settings.index != "embedded":
            return None
        served = settings.index_path
        return self.index_cache / served.name, served

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                raise RuntimeError("the local stack stopped:\n" + "\n".join(self.output[-40:]))
            try:
                with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the local stack did not answer within {self.startup_timeout:.0f} s")

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.rstrip()
            self.output.append(line)
            record = _json_object(line)
            if record is not None and record.get("level") in ("ERROR", "CRITICAL"):
                self.errors[f"server logged: {record.get('message', '?')}"] += 1
            elif line.startswith("Traceback (most recent call last)"):
                self.errors["server: traceback"] += 1
            elif self.echo and record is None and not self._serving:
                print(f"  local: {line}", flush=True)


def _json_object(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# --- the run and its report ---------------------------------------------------------------


def run_conversations(url: str, conversations: Sequence[Conversation], *, timeout: float) -> float:
    """All conversations at once, one thread each; the wall time from the common start."""
    start = threading.Barrier(len(conversations) + 1)
    threads = [
        threading.Thread(
            target=_converse,
            args=(url, conversation, start, timeout),
            name=f"customer-{conversation.number}",
            daemon=True,
        )
        for conversation in conversations
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


@dataclass(slots=True)
class LoadReport:
    url: str
    seed: int
    conversations: list[Conversation]
    wall_s: float
    errors: Counter[str]
    checked: str  # where the stored turns were read back

    @property
    def results(self) -> list[TurnResult]:
        return [result for c in self.conversations for result in c.results]

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def render(self) -> str:
        results = self.results
        answered = [r.reply for r in results if r.reply is not None]
        turns = max((len(c.asks) for c in self.conversations), default=0)
        handovers = Counter(
            next((r.reply.handover.trigger for r in c.results if r.reply and r.reply.handover), "")
            for c in self.conversations
        )
        asked, repeated = _repeats(results)
        stored = "NOT every answered turn" if _missing(self.errors) else "every answered turn"
        lines = [
            f"Kefu load: {len(self.conversations)} sessions × {turns} turns (seed {self.seed}) "
            f"against {self.url}",
            f"  turns         {len(results)} sent, {len(answered)} answered",
            f"  wall time     {self.wall_s:.1f} s",
            f"  throughput    {len(answered) / self.wall_s if self.wall_s else 0:.1f} turns/s "
            "answered",
            f"  latency       {_latencies([r.latency_s for r in results])}",
            *_by_message(results),
            "  outcomes      " + (_counts(Counter(reply.outcome for reply in answered)) or "none"),
            "  hand-overs    "
            + (_counts(Counter({k: v for k, v in handovers.items() if k})) or "none")
            + " (conversations)",
            "  languages     " + _counts(Counter(r.ask.tongue for r in results)),
            f"  repeated      {repeated} of {asked} KB questions were asked after an answer to "
            "the same one (the answer cache's hits at most; the local stack does not count them)",
            f"  stored        {stored}, read back from {self.checked}",
            "  errors        " + (_counts(self.errors, "\n                ") or "none"),
        ]
        return "\n".join(lines)


def percentile(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _latencies(values: Sequence[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    shares = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    figures = [(name, percentile(ordered, share)) for name, share in shares]
    figures.append(("max", ordered[-1]))
    return " · ".join(f"{name} {value * 1000:.0f} ms" for name, value in figures)


def _by_message(results: Sequence[TurnResult]) -> list[str]:
    lines = ["  message         turns   p50 ms   p99 ms"]
    for kind in KINDS:
        values = sorted(r.latency_s for r in results if r.ask.kind == kind)
        if values:
            p50, p99 = (percentile(values, share) * 1000 for share in (0.5, 0.99))
            lines.append(f"    {kind:<12}{len(values):>7}{p50:>9.0f}{p99:>9.0f}")
    return lines


def _repeats(results: Sequence[TurnResult]) -> tuple[int, int]:
    """KB questions asked, and how many of them were asked after another turn had answered the
    same question (as the cache compares them) from the KB."""
    from kefu.answer_cache import normalise

    answered_at: dict[tuple[str, str], float] = {}
    for result in results:
        reply = result.reply
        if reply is not None and reply.outcome == "answered" and reply.sources:
            key = (reply.language, normalise(result.ask.text))
            done = result.sent_at + result.latency_s
            answered_at[key] = min(answered_at.get(key, done), done)
    asked = [r for r in results if r.ask.kind == "faq" and r.reply is not None]
    repeated = sum(
        1
        for r in asked
        if r.reply is not None
        and answered_at.get((r.reply.language, normalise(r.ask.text)), r.sent_at) < r.sent_at
    )
    return len(asked), repeated


def _counts(counts: Mapping[str, int], separator: str = " · ") -> str:
    return separator.join(
        f"{name} {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def _missing(errors: Mapping[str, int]) -> int:
    return sum(
        count for kind, count in errors.items() if "missing turn" in kind or "read back" in kind
    )


def run(
    url: str,
    conversations: list[Conversation],
    *,
    seed: int,
    data_dir: Path | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> LoadReport:
    """The conversations against a running stack, each read back: through the API, and in the
    stores too when its data folder is known."""
    since = datetime.now(UTC) - timedelta(minutes=1)
    wall = run_conversations(url, conversations, timeout=timeout)
    errors = Counter(r.error for c in conversations for r in c.results if r.error)
    errors.update(check_threads(url, conversations, timeout))
    checked = "the API's hand-over threads"
    if data_dir is not None:
        errors.update(check_stores(data_dir, conversations, since))
        checked = f"the session store, the turn records and {checked}"
    return LoadReport(url, seed, conversations, wall, errors, checked)


def run_local_stack(
    conversations: list[Conversation],
    *,
    seed: int,
    kb: Sequence[Path] | None = None,
    index_cache: Path | None = INDEX_CACHE,
    timeout: float = REQUEST_TIMEOUT_S,
    echo: bool = True,
) -> LoadReport:
    """The conversations against a local stack started for them in a temporary data folder."""
    with tempfile.TemporaryDirectory(prefix="kefu-load-") as folder:
        data_dir = Path(folder)
        stack = LocalStack(data_dir, kb=kb, index_cache=index_cache, echo=echo)
        with stack:
            report = run(stack.url, conversations, seed=seed, timeout=timeout)
        # Read once the stack has stopped: every write it acknowledged is in its files.
        report.errors.update(
            check_stores(data_dir, conversations, datetime.now(UTC) - timedelta(hours=1))
        )
        report.checked = f"the session store, the turn records and {report.checked}"
        report.errors.update(stack.errors)
        return report


def conversations_for(
    sessions: int, turns: int, *, seed: int, kb: Sequence[Path] | None = None
) -> list[Conversation]:
    mix = QuestionMix(faq_questions(kb or SAMPLE_KB_PATHS), seed=seed, order_ids=sample_order_ids())
    return [Conversation(number, mix.conversation(number, turns)) for number in range(sessions)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sessions", type=int, default=100, help="conversations at once (100)")
    parser.add_argument("--turns", type=int, default=20, help="messages in each (20)")
    parser.add_argument("--seed", type=int, default=20261207, help="the mix's seed")
    parser.add_argument("--url", help="a running stack to load (default: start one)")
    parser.add_argument(
        "--data-dir", type=Path, help="with --url: its KEFU_DATA_DIR, to read the stores back"
    )
    parser.add_argument(
        "--kb", type=Path, nargs="+", help="the KB to serve and ask about (default: the sample KB)"
    )
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT_S, help="per request, s")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 1:
        parser.error("--sessions and --turns must be at least 1")

    conversations = conversations_for(args.sessions, args.turns, seed=args.seed, kb=args.kb)
    if args.url:
        report = run(
            args.url.rstrip("/"),
            conversations,
            seed=args.seed,
            data_dir=args.data_dir,
            timeout=args.timeout,
        )
    else:
        print("Starting the local stack in a temporary data folder …", flush=True)
        report = run_local_stack(conversations, seed=args.seed, kb=args.kb, timeout=args.timeout)
    print(report.render(), flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
