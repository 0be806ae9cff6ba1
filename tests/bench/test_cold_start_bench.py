"""The chat function's cold start: importing its handler, as a ratio to importing boto3 (`make
bench`). Each import runs in a fresh interpreter, alternating the two, and the medians are
compared: the ratio, unlike the seconds, stays comparable across machines.

`KEFU_BENCH_CODE_ROOT` points the measurement at another checkout (its layer and functions put
first on the path), so two versions can be measured in one run on one machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

RUNS = 9
ROOT = Path(os.environ.get("KEFU_BENCH_CODE_ROOT", Path(__file__).parents[2]))


def _import_seconds(module: str) -> float:
    script = (
        "import time; start = time.perf_counter(); "
        f"import {module}; print(time.perf_counter() - start)"
    )
    path = os.pathsep.join([str(ROOT / "layers" / "kefu" / "python"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def test_the_chat_handler_imports_within_a_few_boto3s() -> None:
    _import_seconds("functions.chat.handler")  # warm the file cache for both
    handler, boto3 = [], []
    for _ in range(RUNS):
        handler.append(_import_seconds("functions.chat.handler"))
        boto3.append(_import_seconds("boto3"))
    ratio = statistics.median(handler) / statistics.median(boto3)

    print(
        f"\nchat handler import: median {statistics.median(handler) * 1000:.0f} ms, "
        f"import boto3 {statistics.median(boto3) * 1000:.0f} ms: {ratio:.2f}x ({ROOT})"
    )
    assert ratio < 15
