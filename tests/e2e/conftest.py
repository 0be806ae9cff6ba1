from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
STARTUP_LIMIT_S = 300


@dataclass
class LocalStack:
    url: str
    output: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(data_dir: Path) -> tuple[subprocess.Popen[str], LocalStack]:
    """`python -m local` as `make run` starts it, on a free loopback port, until it serves."""
    port = free_port()
    env = {
        **os.environ,
        "KEFU_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "kefu" / "python"), str(ROOT)]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + STARTUP_LIMIT_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        output.append(line.rstrip())
        if "Kefu is serving on" in line:
            return process, LocalStack(url=f"http://127.0.0.1:{port}", output=output)
    process.kill()
    pytest.fail("the local stack did not start:\n" + "\n".join(output))


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kefu-data")


@pytest.fixture(scope="session")
def local_stack(data_dir: Path) -> Iterator[LocalStack]:
    process, stack = start(data_dir)
    yield stack
    stop(process)
