"""An HTTP server that turns each request into an API Gateway REST proxy event for the handler.

The same `lambda_handler` answers here as in AWS, so what works locally is what deploys.
"""

from __future__ import annotations

import base64
import json
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

WEB_ROOT = Path(__file__).parent / "web"
MAX_BODY_BYTES = 64 * 1024
# The pages served as they are: the customer's chat, and the agents' desk.
PAGES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/agent": "agent.html",
    "/agent.html": "agent.html",
}


class LocalContext:
    """The parts of the Lambda context object that Powertools reads."""

    function_name = "kefu-chat-local"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:kefu-chat-local"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def proxy_event(
    *, method: str, raw_path: str, headers: dict[str, str], body: bytes | None
) -> dict[str, Any]:
    """An API Gateway REST API (v1) proxy integration event, as the `{proxy+}` resource sends."""
    url = urlsplit(raw_path)
    query = parse_qs(url.query, keep_blank_values=True)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
    request_id = uuid.uuid4().hex
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": url.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": url.path,
            "stage": "local",
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class KefuRequestHandler(BaseHTTPRequestHandler):
    server_version = "kefu-local"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        page = PAGES.get(urlsplit(self.path).path)
        if page:
            self._send(HTTPStatus.OK, (WEB_ROOT / page).read_bytes(), "text/html; charset=utf-8")
            return
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _proxy(self) -> None:
        from functions.chat.handler import lambda_handler

        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "payload_too_large",
                f"The body may be at most {MAX_BODY_BYTES} bytes.",
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else None
        headers = {key.lower(): value for key, value in self.headers.items()}
        event = proxy_event(method=self.command, raw_path=self.path, headers=headers, body=body)
        result = lambda_handler(event, LocalContext())
        payload = result.get("body") or ""
        raw = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        response_headers = dict(result.get("headers") or {})
        for key, values in (result.get("multiValueHeaders") or {}).items():
            response_headers[key] = ", ".join(values)
        self._send(HTTPStatus(result["statusCode"]), raw, None, response_headers)

    def _send_json(self, status: HTTPStatus, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(status, body, "application/json")

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            if key.lower() not in ("content-length", "connection"):
                self.send_header(key, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the handler's structured logs already record every request


class LocalServer(ThreadingHTTPServer):
    """A thread per connection, as many customers at once as API Gateway takes."""

    daemon_threads = True
    # The listen backlog: connections the kernel completes before the server accepts them.
    # socketserver's 5 drops (then resets) the rest of a hundred customers arriving at once.
    request_queue_size = 1024


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    return LocalServer((host, port), KefuRequestHandler)
