"""The signed OpenSearch client, its time budgets, and what its failures mean to a caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection
from opensearchpy.exceptions import TransportError

from kefu.errors import ConfigurationError, DependencyUnavailable

if TYPE_CHECKING:
    from botocore.credentials import Credentials

# Seconds a request may wait (requests applies it to connecting and to each read), and retries
# after the first attempt. A chat turn's search requests (`SEARCH_REQUESTS`) come after the
# question was embedded, all within API Gateway's 29 seconds; ingestion has minutes, and a
# retry is cheaper than a failed batch.
INTERACTIVE_TIMEOUT = 1.5
INTERACTIVE_RETRIES = 1
BATCH_TIMEOUT = 10.0
BATCH_RETRIES = 2


def connect(
    url: str,
    *,
    region: str,
    service: Literal["es", "aoss"] = "es",
    credentials: Credentials | None = None,
    timeout: float = INTERACTIVE_TIMEOUT,
    max_retries: int = INTERACTIVE_RETRIES,
) -> OpenSearch:
    """A client for a managed domain (`es`) or a serverless collection (`aoss`), signing each
    request with SigV4 and verifying TLS. Credentials default to boto3's chain (the Lambda's
    role); nothing is sent until the first request.

    A request waits up to `timeout` seconds to connect and as long for each read, and is tried
    `1 + max_retries` times (after a timeout, a lost connection or a 502-504). The defaults are
    a chat turn's; ingestion passes `BATCH_TIMEOUT` and `BATCH_RETRIES`.
    """
    if not url.startswith("https://"):
        raise ConfigurationError(f"OpenSearch URL {url!r} must use https: requests are signed")
    if credentials is None:
        import boto3

        # The default session, which the other clients use: a session of its own would load
        # botocore's handlers and service list a second time on a cold start.
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        credentials = boto3.DEFAULT_SESSION.get_credentials()
        if credentials is None:
            raise ConfigurationError("no AWS credentials to sign OpenSearch requests with")
    return OpenSearch(
        hosts=[url],
        http_auth=AWSV4SignerAuth(credentials, region, service),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=timeout,
        max_retries=max_retries,
        retry_on_timeout=True,
    )


@contextmanager
def unavailable(action: str) -> Iterator[None]:
    """Turn a transport or cluster error into DependencyUnavailable, so the chat degrades."""
    try:
        yield
    except TransportError as exc:
        raise DependencyUnavailable(f"OpenSearch {action} failed: {exc}") from exc
