"""What the fuzz tests sent and what came back, for the line `make fuzz` ends with: the cases
run, responses of 500 or more, dropped connections and error bodies off the project's shape
(`{"error": {"code": ..., "message": ...}}`). tests/conftest.py prints it. Under xdist (`make
test`) each worker counts its own and none is printed; the tests assert each case anyway."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

TALLY: Counter[str] = Counter()


def off_shape(status: int, body: str | bytes | None) -> str | None:
    """Why an answer of `status` with `body` is off the project's shape; None when it is not.
    Every answer is JSON; every error is exactly {"error": {"code": str, "message": str}}."""
    try:
        payload: Any = json.loads(body or b"")
    except ValueError:
        return f"{status} answered with a body that is not JSON: {body!r:.200}"
    if status < 400:
        return None
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return f"{status} error body is not {{'error': ...}}: {payload!r:.200}"
    error = payload["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message"}:
        return f"{status} error is not {{'code', 'message'}}: {error!r:.200}"
    if not all(isinstance(error[key], str) and error[key] for key in ("code", "message")):
        return f"{status} error code and message are not text: {error!r:.200}"
    return None


def record(kind: str, status: int | None, problem: str | None = None) -> None:
    """Count one case of `kind`; `status` None is a connection that got no answer."""
    TALLY["cases"] += 1
    TALLY[f"cases:{kind}"] += 1
    if status is None:
        TALLY["dropped connections"] += 1
    elif status >= 500:
        TALLY["responses >= 500"] += 1
    if problem:
        TALLY["off-shape error bodies"] += 1


def summary() -> str | None:
    if not TALLY["cases"]:
        return None
    kinds = ", ".join(
        f"{key.split(':', 1)[1]} {count:,}" for key, count in sorted(TALLY.items()) if ":" in key
    )
    return (
        f"fuzz: {TALLY['cases']:,} cases ({kinds}); "
        f"{TALLY['responses >= 500']} responses >= 500, "
        f"{TALLY['dropped connections']} dropped connections, "
        f"{TALLY['off-shape error bodies']} off-shape error bodies"
    )
