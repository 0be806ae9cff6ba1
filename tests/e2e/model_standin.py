"""A stand-in for the model APIs Claude answers through, on a free loopback port: enough of the
Bedrock Runtime Converse API (`POST /model/{modelId}/converse`) and of Anthropic's Messages API
(`POST /v1/messages`) for the local stack's adapters to talk to it as they would to AWS or to
Anthropic (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, `ANTHROPIC_BASE_URL`).

It runs in the test process, records every request it is sent (path, headers, JSON body) for the
test to read, and replies as the test sets it to: by default with `SENTENCE` and a
`<sources>` line naming the first source of the request's knowledge; or with another text; or
with an HTTP error in the API's own error shape, for every call.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import unescape

SENTENCE = "Headphones that fail within 15 days of delivery can be replaced instead of repaired."
_CONVERSE = re.compile(r"^/model/(?P<model>[^/]+)/converse$")
_MESSAGES = "/v1/messages"
_SOURCE_ID = re.compile(r"""<source id=(?:"([^"]*)"|'([^']*)')""")
# The error each API gives for a status: Bedrock's `x-amzn-ErrorType`, Anthropic's error type.
_BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the stand-in was sent. `api` is "converse" or "messages"."""

    api: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]
    raw: str  # the body as sent, to search for what must not be in it

    @property
    def system(self) -> str:
        """The system prompt's text."""
        system = self.body.get("system", "")
        if isinstance(system, str):
            return system
        return "".join(block.get("text", "") for block in system)

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (its text blocks joined)."""
        users = [m for m in self.body.get("messages", []) if m.get("role") == "user"]
        if not users:
            return ""
        content = users[-1].get("content", "")
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def first_source_id(text: str) -> str | None:
    """The id of the first `<source id="...">` in a prompt's knowledge."""
    found = _SOURCE_ID.search(text)
    if found is None:
        return None
    return unescape(found.group(1) or found.group(2) or "", {"&quot;": '"', "&apos;": "'"})


def cite_first_source(request: RecordedRequest) -> str:
    """The default reply: `SENTENCE`, citing the first source the request offered (none for a
    request without knowledge, such as a summary)."""
    source = first_source_id(request.last_user_text)
    return SENTENCE if source is None else f"{SENTENCE}\n<sources>{source}</sources>"


Replier = Callable[[RecordedRequest], str]


class ModelStandIn:
    """The stand-in server. Use as a context manager, or `start()` and `stop()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._replier: Replier = cite_first_source
        self._status = 200
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The model requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reply_with(self, replier: Replier) -> None:
        """Answer every model request with the text `replier` writes for it."""
        with self._lock:
            self._replier, self._status = replier, 200

    def fail_with(self, status: int) -> None:
        """Answer every model request with this HTTP error, as the API would."""
        with self._lock:
            self._status = status

    def reset(self) -> None:
        """Forget the requests, and reply by default again."""
        with self._lock:
            self._requests.clear()
            self._replier, self._status = cite_first_source, 200

    def start(self) -> ModelStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ModelStandIn:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _respond(self, api: str, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body answering a recorded model request."""
        with self._lock:
            self._requests.append(request)
            replier, status = self._replier, self._status
        if status != 200:
            return _error(api, status)
        text = replier(request)
        if api == "converse":
            body: dict[str, Any] = {
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120},
                "metrics": {"latencyMs": 1},
            }
        else:
            body = {
                "id": f"msg_standin_{len(self.requests):04d}",
                "type": "message",
                "role": "assistant",
                "model": request.body.get("model", "claude"),
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 20},
            }
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _error(api: str, status: int) -> tuple[int, dict[str, str], bytes]:
    message = f"stand-in error {status}"
    if api == "converse":
        kind = _BEDROCK_ERRORS.get(status, "InternalServerException")
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": kind}
        return status, headers, json.dumps({"message": message}).encode()
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _handler_for(standin: ModelStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            api = "converse" if _CONVERSE.match(path) else "messages" if path == _MESSAGES else ""
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if not api:
                self._send(404, {"Content-Type": "application/json"}, b'{"message":"not found"}')
                return
            request = RecordedRequest(
                api=api,
                path=path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=json.loads(raw or "{}"),
                raw=raw,
            )
            self._send(*standin._respond(api, request))

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads the recorded requests instead."""

    return Handler
