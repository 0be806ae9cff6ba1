from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# Indexing the sample KB takes about 4 minutes of CPU on 2 cores, longer on a busy machine.
STARTUP_LIMIT_S = 600


@dataclass
class LocalStack:
    """A running local stack: its URL, and what it has printed (and logged) so far."""

    url: str
    output: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    data_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], LocalStack]:
    """`python -m local` as `make run` starts it, on a free loopback port, until it serves;
    `env` adds to (or overrides) the environment it is started in."""
    port = free_port()
    environment = {
        **os.environ,
        **(env or {}),
        "KEFU_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "kefu" / "python"), str(ROOT)]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + STARTUP_LIMIT_S
    assert process.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            output.append(line.rstrip())
            if "Kefu is serving on" in line:
                # Read on while it serves: its logs go to the same pipe, which would fill and
                # block it, and a test may look for what was (or must not be) logged.
                threading.Thread(target=_read_on, args=(process, output), daemon=True).start()
                return process, LocalStack(url=f"http://127.0.0.1:{port}", output=output)
    except BaseException:
        process.kill()  # interrupted (a test timeout, Ctrl-C): leave no server behind
        raise
    process.kill()
    pytest.fail("the local stack did not start:\n" + "\n".join(output))


def _read_on(process: subprocess.Popen[str], output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line.rstrip())


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
