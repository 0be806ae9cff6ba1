"""Telling the helpdesk about a new ticket: an SNS topic, a signed webhook, or the log.

A webhook request carries `X-Kefu-Timestamp` (Unix seconds), `X-Kefu-Delivery` (one id per
notice, the same on every retry of it, for the receiver to drop duplicates) and
`X-Kefu-Signature: sha256=<hex>`, the HMAC-SHA256 of `f"{timestamp}.{body}"` under the shared
secret; a receiver checks it with `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.observability import logger
from kefu.tickets import Ticket, ticket_body

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The longest pause between two webhook attempts, in seconds.
MAX_BACKOFF = 8.0
# Worth another attempt: the receiver timed out, is throttling, or failed on its side.
_RETRIED_STATUSES = frozenset({408, 429})


class LogNotifier:
    """The helpdesk reads the log: the ticket's id, trigger and priority, never its transcript."""

    name = "log"

    def notify(self, ticket: Ticket) -> None:
        logger.info(
            "ticket handed over",
            extra={
                "ticket_id": ticket.ticket_id,
                "trigger": ticket.trigger,
                "priority": ticket.priority,
            },
        )


class SnsNotifier:
    """Publishes a short notice of the ticket (no transcript) to an SNS topic, with `priority`
    and `trigger` as message attributes for subscription filter policies."""

    name = "sns"

    def __init__(self, topic_arn: str, *, client: Any = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "sns",
                config=Config(
                    connect_timeout=1,
                    read_timeout=3,
                    retries={"mode": "standard", "total_max_attempts": 3},
                ),
            )
        self._client = client
        self._topic = topic_arn

    def notify(self, ticket: Ticket) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        message = {
            "ticket_id": ticket.ticket_id,
            "session_id": ticket.session_id,
            "trigger": ticket.trigger,
            "priority": ticket.priority,
            "language": ticket.language,
            "intent": ticket.intent,
            "summary": ticket.summary,
            "created_at": ticket.created_at.isoformat(),
        }
        try:
            self._client.publish(
                TopicArn=self._topic,
                # ASCII and at most 100 characters (ticket ids are at most 64, [A-Za-z0-9_-]).
                Subject=f"[{ticket.priority}] Kefu ticket {ticket.ticket_id}"[:100],
                Message=json.dumps(message, ensure_ascii=False),
                MessageAttributes={
                    "priority": {"DataType": "String", "StringValue": ticket.priority},
                    "trigger": {"DataType": "String", "StringValue": ticket.trigger},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable("notification topic did not take the notice") from exc


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Kefu-Signature` value of a request: `sha256=` and the hex HMAC-SHA256 of
    `f"{timestamp}.{body}"` under `secret`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` (an `X-Kefu-Signature` value) signs this timestamp and body. A
    receiver should also refuse a timestamp far from its own clock (a replayed request)."""
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a GET without its body, perhaps to another host.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookNotifier:
    """POSTs the whole ticket (`kefu.tickets.ticket_body` as JSON), signed, to the helpdesk's
    webhook. Retries a lost connection, a timeout, 408, 429 and 5xx `attempts` times in all,
    pausing `backoff * 2**n` seconds (at most `MAX_BACKOFF`) between them; any other answer
    but 2xx is final."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 4,
        backoff: float = 0.5,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        ):
            raise ValueError(
                f"the webhook URL {url!r} must use https (http only to 127.0.0.1 or localhost)"
            )
        if not secret:
            raise ValueError("the webhook needs a signing secret")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if parts.hostname in LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))  # loopback never via a proxy
        self._opener = urllib.request.build_opener(*handlers)

    def notify(self, ticket: Ticket) -> None:
        body = json.dumps(ticket_body(ticket), ensure_ascii=False).encode()
        delivery = str(uuid.uuid4())
        failure = ""
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            # Signed afresh each attempt: a receiver refuses stale timestamps.
            timestamp = str(int(time.time()))
            request = urllib.request.Request(
                self._url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "kefu-webhook/1",
                    "X-Kefu-Timestamp": timestamp,
                    "X-Kefu-Signature": sign(self._secret, timestamp, body),
                    "X-Kefu-Delivery": delivery,
                },
            )
            try:
                with self._opener.open(request, timeout=self._timeout) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code not in _RETRIED_STATUSES and exc.code < 500:
                    raise DependencyUnavailable(f"webhook refused the notice: {exc.code}") from exc
                failure = f"answered {exc.code}"
            except (urllib.error.URLError, HTTPException, OSError) as exc:
                failure = f"unreachable: {type(exc).__name__}"
            logger.warning(
                "webhook attempt failed",
                extra={
                    "ticket_id": ticket.ticket_id,
                    "delivery": delivery,
                    "attempt": attempt + 1,
                    "failure": failure,
                },
            )
        raise DependencyUnavailable(f"webhook {failure} after {self._attempts} attempts")


def webhook_from_secret(secret_name: str) -> WebhookNotifier:
    """The webhook whose URL and signing secret are in a Secrets Manager secret holding
    `{"url": ..., "secret": ...}` (cached five minutes, so a rotation is picked up)."""
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(secret_name, transform="json", max_age=300)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigurationError(f"webhook secret {secret_name!r} unreadable: {exc}") from exc
    except parameters.exceptions.TransformParameterError as exc:
        raise ConfigurationError(f"webhook secret {secret_name!r} is not JSON") from exc
    url = value.get("url") if isinstance(value, dict) else None
    secret = value.get("secret") if isinstance(value, dict) else None
    if not isinstance(url, str) or not url or not isinstance(secret, str) or not secret:
        raise ConfigurationError(
            f'webhook secret {secret_name!r} must hold {{"url": ..., "secret": ...}}'
        )
    try:
        return WebhookNotifier(url, secret)
    except ValueError as exc:
        raise ConfigurationError(f"webhook secret {secret_name!r}: {exc}") from exc
