"""The chat function's cold start: importing its handler, and importing it and building the
chat service as deployed, each as a ratio to importing boto3 (`make bench`). Each measurement
runs in a fresh interpreter, alternating with boto3's, and the medians are compared: the ratio,
unlike the seconds, stays comparable across machines.

`KEFU_BENCH_CODE_ROOT` points the measurement at another checkout (its layer and functions put
first on the path), so two versions can be measured in one run on one machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

RUNS = 9
ROOT = Path(os.environ.get("KEFU_BENCH_CODE_ROOT", Path(__file__).parents[2]))
IMPORT_HANDLER = "import functions.chat.handler"
# What the first request of a fresh container pays before it is answered.
BUILD_SERVICE = f"{IMPORT_HANDLER}; from kefu.bootstrap import get_chat_service; get_chat_service()"
# The chat function as the CDK app deploys it in AWS: building the service creates the Bedrock,
# OpenSearch and DynamoDB clients and calls none of them.
DEPLOYED = {
    "KEFU_MODEL": "bedrock",
    "KEFU_EMBEDDER": "bedrock",
    "KEFU_INDEX": "opensearch",
    "KEFU_OPENSEARCH_URL": "https://search-kefu.us-east-1.es.amazonaws.com",
    "KEFU_SESSIONS": "dynamodb",
    "KEFU_SESSIONS_TABLE": "kefu-sessions",
    "KEFU_FAQ_THRESHOLD": "0.8",
    "KEFU_HEAD_THRESHOLD": "0.3",
    "KEFU_PASSAGE_THRESHOLD": "0.8",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _seconds(statement: str, env: Mapping[str, str] | None = None) -> float:
    script = (
        f"import time; start = time.perf_counter(); {statement}; print(time.perf_counter() - start)"
    )
    path = os.pathsep.join([str(ROOT / "layers" / "kefu" / "python"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _beside_boto3(statement: str, env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """The median seconds of `statement` and of `import boto3`."""
    _seconds(statement, env)  # warm the file cache for both
    measured, boto3 = [], []
    for _ in range(RUNS):
        measured.append(_seconds(statement, env))
        boto3.append(_seconds("import boto3"))
    return statistics.median(measured), statistics.median(boto3)


def test_the_chat_handler_imports_within_a_few_boto3s() -> None:
    seconds, boto3 = _beside_boto3(IMPORT_HANDLER)
    ratio = seconds / boto3
    print(
        f"\nchat handler import: median {seconds * 1000:.0f} ms, "
        f"import boto3 {boto3 * 1000:.0f} ms: {ratio:.2f}x ({ROOT})"
    )
    assert ratio < 15


def test_the_deployed_chat_service_is_built_within_a_few_boto3s() -> None:
    seconds, boto3 = _beside_boto3(BUILD_SERVICE, DEPLOYED)
    ratio = seconds / boto3
    print(
        f"\nchat handler import + service build (Bedrock, OpenSearch, DynamoDB): median "
        f"{seconds * 1000:.0f} ms, import boto3 {boto3 * 1000:.0f} ms: {ratio:.2f}x ({ROOT})"
    )
    assert ratio < 15
