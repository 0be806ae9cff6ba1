"""The Redis answer cache against a real Redis: the one at REDIS_URL (default
redis://127.0.0.1:6379/15, a database of its own), or a redis-server started on a free port
when the binary exists. Skipped, saying so, only when neither is available."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from kefu.adapters.cache import RedisAnswerCache
from kefu.errors import DependencyUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/15"
# One worker runs them all: they share the database, which each test empties.
pytestmark = pytest.mark.xdist_group("redis")


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL", DEFAULT_URL)
    if _reachable(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"no Redis at {url} and no redis-server binary to start one")
    port = _free_port()
    folder: Path = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/15"
    try:
        deadline = time.monotonic() + 10
        while not _reachable(url):
            if time.monotonic() > deadline:
                pytest.skip(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


def test_a_value_comes_back_until_its_ttl_runs_out(redis_url: str, client: Any) -> None:
    cache = RedisAnswerCache(redis_url)
    assert cache.get("kefu:answer:v1:t:en:1:abc") is None
    cache.put("kefu:answer:v1:t:en:1:abc", "退款 1–3 天".encode(), 60)
    assert cache.get("kefu:answer:v1:t:en:1:abc") == "退款 1–3 天".encode()
    assert 0 < client.ttl("kefu:answer:v1:t:en:1:abc") <= 60
    cache.put("kefu:answer:v1:t:en:1:short", b"x", 1)
    time.sleep(1.2)
    assert cache.get("kefu:answer:v1:t:en:1:short") is None


def test_a_cache_that_is_down_is_a_dependency_failure_within_its_timeout() -> None:
    cache = RedisAnswerCache(f"redis://127.0.0.1:{_free_port()}/15", timeout=0.1)
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable):
        cache.get("k")
    with pytest.raises(DependencyUnavailable):
        cache.put("k", b"v", 60)
    assert time.monotonic() - started < 2  # bounded, not the client's default


def test_a_slow_cache_is_bounded_by_the_timeout(redis_url: str, client: Any) -> None:
    """A server that accepts the connection but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        cache = RedisAnswerCache(f"redis://127.0.0.1:{port}/0", timeout=0.1)
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable):
            cache.get("k")
        assert time.monotonic() - started < 2


def test_the_chat_turn_reads_and_writes_the_redis_cache(
    redis_url: str, client: Any, retriever: Any
) -> None:
    from kefu.adapters.extractive import ExtractiveModel
    from kefu.adapters.sessions import SqliteSessionStore
    from kefu.chat import ChatService
    from kefu.models import ChatRequest

    chat = ChatService(
        retriever=retriever,
        model=ExtractiveModel(),
        sessions=SqliteSessionStore(":memory:"),
        cache=RedisAnswerCache(redis_url),
        cache_ttl_seconds=120,
    )
    first = chat.handle(ChatRequest(message="退款多久到账？"))
    [key] = client.keys("kefu:answer:v1:*")
    assert key.decode().startswith("kefu:answer:v1:default:zh:")
    assert 0 < client.ttl(key) <= 120
    again = chat.handle(ChatRequest(message="退款多久到账"))
    assert again.sources == first.sources
    assert again.session_id != first.session_id


@pytest.fixture
def acl_user(redis_url: str, client: Any) -> Iterator[tuple[str, str]]:
    """A user with the access string the deployed cache's user has (infra_cdk), and nothing
    more; removed afterwards."""
    from infra_cdk.constructs.answer_cache import CACHE_ACCESS_STRING

    name, password = f"kefu-test-{os.getpid()}", "a-password-of-some-length-1234"
    rules = [rule for rule in CACHE_ACCESS_STRING.split() if rule != "on"]
    client.acl_setuser(name, enabled=True, reset=True, passwords=[f"+{password}"])
    client.execute_command("ACL", "SETUSER", name, *rules)
    yield name, password
    client.acl_deluser(name)


def test_the_deployed_users_access_is_enough_for_the_cache_and_no_more(
    redis_url: str, client: Any, acl_user: tuple[str, str]
) -> None:
    name, password = acl_user
    # The database the test uses: SELECT is not in the user's rights, so connect to database 0.
    base = redis_url.rsplit("/", 1)[0] + "/0"
    cache = RedisAnswerCache(base, credentials=lambda: (name, password))
    cache.put("kefu:answer:v1:t:en:1:acl", b"answer", 60)
    assert cache.get("kefu:answer:v1:t:en:1:acl") == b"answer"
    as_user = redis.Redis.from_url(base, username=name, password=password)
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user.get("kefu:sessions:someone")  # not an answer key
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user.keys("*")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user.flushdb()
    redis.Redis.from_url(base).delete("kefu:answer:v1:t:en:1:acl")


def test_credentials_are_read_for_each_new_connection_and_a_failure_degrades(
    redis_url: str, client: Any, acl_user: tuple[str, str]
) -> None:
    name, password = acl_user
    base = redis_url.rsplit("/", 1)[0] + "/0"
    calls: list[str] = []

    def credentials() -> tuple[str, str]:
        calls.append("read")
        if len(calls) == 1:
            raise DependencyUnavailable("secret unreadable")
        return name, password

    cache = RedisAnswerCache(base, credentials=credentials)
    with pytest.raises(DependencyUnavailable):
        cache.get("kefu:answer:v1:t:en:1:creds")
    # The half-open connection was dropped: the next call authenticates afresh and works.
    assert cache.get("kefu:answer:v1:t:en:1:creds") is None
    assert calls == ["read", "read"]
    with pytest.raises(DependencyUnavailable):
        RedisAnswerCache(base, credentials=lambda: (name, "wrong-password-0000000")).get("k")
