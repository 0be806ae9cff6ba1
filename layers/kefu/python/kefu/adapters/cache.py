"""Answer caches: Redis (ElastiCache in AWS: TLS, a user and password from Secrets Manager) and
an in-process LRU for `make run` without Redis."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kefu.errors import DependencyUnavailable

if TYPE_CHECKING:
    import redis

# A cache slower than this is treated as down: the turn goes on without it.
REDIS_TIMEOUT_SECONDS = 0.1
# How long a user and password read from Secrets Manager serve new connections.
CREDENTIALS_MAX_AGE_SECONDS = 300

Credentials = Callable[[], tuple[str, str]]


def secret_credentials(
    secret_name: str, *, max_age: int = CREDENTIALS_MAX_AGE_SECONDS, client: Any = None
) -> Credentials:
    """The user and password in a Secrets Manager secret (`{"username": ..., "password": ...}`),
    read when a connection opens and kept `max_age` seconds: a new password reaches new
    connections within that. The read is bounded (a second, two attempts), and any failure
    (unreachable, missing, not that JSON) is `DependencyUnavailable`: the turn goes on without
    the cache."""
    provider: Any = None

    def read() -> tuple[str, str]:
        nonlocal provider
        from aws_lambda_powertools.utilities import parameters

        if provider is None:
            from botocore.config import Config

            provider = parameters.SecretsProvider(
                boto_config=Config(
                    connect_timeout=1,
                    read_timeout=1,
                    retries={"mode": "standard", "total_max_attempts": 2},
                ),
                boto3_client=client,
            )
        try:
            value: Any = provider.get(secret_name, transform="json", max_age=max_age)
        except Exception as exc:  # any failure: the cache is skipped, never the turn
            raise DependencyUnavailable(
                f"answer cache credentials unreadable: {type(exc).__name__}"
            ) from exc
        if not isinstance(value, Mapping) or not all(
            isinstance(value.get(field), str) and value.get(field)
            for field in ("username", "password")
        ):
            raise DependencyUnavailable(
                'answer cache credentials: the secret is not {"username": ..., "password": ...}'
            )
        return str(value["username"]), str(value["password"])

    return read


class RedisAnswerCache:
    """Values in Redis under their key, each with its TTL. `url` is redis-py's: `redis://` or,
    with TLS, `rediss://host:6379/0` (credentials in it, or from `credentials` for each new
    connection). Every error or timeout is `DependencyUnavailable`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        credentials: Credentials | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        import redis
        from redis.credentials import CredentialProvider

        class _Provider(CredentialProvider):
            def get_credentials(self) -> tuple[str, str]:
                assert credentials is not None
                return credentials()

        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = client or redis.Redis.from_url(
            url,
            credential_provider=_Provider() if credentials is not None else None,
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
