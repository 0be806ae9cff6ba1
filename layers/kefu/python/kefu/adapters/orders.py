"""The order system: over HTTPS in AWS (the enterprise's API, its key in Secrets Manager), and a
sample order book for local mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from kefu.errors import ConfigurationError, DependencyUnavailable
from kefu.ports import Order, TrackingEvent

SAMPLE_ORDERS = Path(__file__).parents[1] / "data" / "sample_orders.json"
# A chat turn waits this long for the order system (connect, then each read).
TIMEOUT_SECONDS = 3.0


def order_from(data: dict[str, Any]) -> Order:
    """An order from the order system's JSON (the sample book's shape)."""
    return Order(
        order_id=str(data["order_id"]),
        status=str(data["status"]),
        placed_at=str(data.get("placed_at", "")),
        items=tuple(str(item) for item in data.get("items", ())),
        carrier=str(data.get("carrier") or ""),
        tracking_number=str(data.get("tracking_number") or ""),
        tracking=tuple(
            TrackingEvent(at=str(event["at"]), description=str(event["description"]))
            for event in data.get("tracking") or ()
        ),
        refund_status=str(data.get("refund_status") or ""),
        returnable_until=str(data.get("returnable_until") or ""),
    )


class SampleOrderBook:
    """An `OrderSystem` over a JSON file of orders (`{"orders": [...]}`)."""

    def __init__(self, path: Path = SAMPLE_ORDERS) -> None:
        rows = json.loads(path.read_text(encoding="utf-8"))["orders"]
        self._orders = {str(row["order_id"]): order_from(row) for row in rows}

    def find(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)


class HttpsOrderSystem:
    """An `OrderSystem` calling `GET {base_url}/orders/{order_id}` with the key in `x-api-key`:
    200 is the order, 404 no such order; anything else, a timeout or a lost connection is
    `DependencyUnavailable`. `api_key` is asked on each call (it caches; a rotated key is read
    again when its cache expires)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Callable[[], str],
        session: Any = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "https" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigurationError(f"the order system URL {base_url!r} must use https")
        if session is None:
            import requests

            session = requests.Session()
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session
        self._timeout = timeout

    def find(self, order_id: str) -> Order | None:
        import requests

        try:
            response = self._session.get(
                f"{self._base}/orders/{quote(order_id, safe='')}",
                headers={"x-api-key": self._api_key(), "accept": "application/json"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise DependencyUnavailable(f"order system unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DependencyUnavailable(f"order system answered {response.status_code}")
        try:
            return order_from(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyUnavailable("order system answered an unreadable order") from exc


def secret_api_key(secret_name: str, *, max_age: int = 300) -> Callable[[], str]:
    """The order system's key, read from Secrets Manager (cached `max_age` seconds)."""

    def read() -> str:
        from aws_lambda_powertools.utilities import parameters

        try:
            return str(parameters.get_secret(secret_name, max_age=max_age))
        except parameters.exceptions.GetParameterError as exc:
            raise DependencyUnavailable(f"order system key unreadable: {exc}") from exc

    return read
