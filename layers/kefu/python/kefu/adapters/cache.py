"""Answer caches: Redis (ElastiCache in AWS, TLS and AUTH through the URL) and an in-process
LRU for `make run` without Redis."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from kefu.errors import DependencyUnavailable

if TYPE_CHECKING:
    import redis

# A cache slower than this is treated as down: the turn goes on without it.
REDIS_TIMEOUT_SECONDS = 0.1


class RedisAnswerCache:
    """Values in Redis under their key, each with its TTL. `url` is redis-py's: `redis://` or,
    with TLS, `rediss://user:password@host:6379/0`. Every error or timeout is
    `DependencyUnavailable`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        client: redis.Redis | None = None,
    ) -> None:
        import redis

        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = client or redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A cache that fails is skipped at once; the next turn tries again.
            retry_on_timeout=False,
            health_check_interval=30,
        )

    def get(self, key: str) -> bytes | None:
        try:
            value = self._client.get(key)
        except self._errors as exc:
            raise DependencyUnavailable(f"answer cache read failed: {type(exc).__name__}") from exc
        if value is None or isinstance(value, bytes):
            return value
        raise DependencyUnavailable("answer cache returned text: use a client without decoding")

    def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            self._client.set(key, value, ex=ttl_seconds)
        except self._errors as exc:
            raise DependencyUnavailable(f"answer cache write failed: {type(exc).__name__}") from exc


class MemoryAnswerCache:
    """At most `max_entries` values in this process, the least recently used dropped first,
    each until its TTL runs out."""

    def __init__(
        self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if self._clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl_seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
