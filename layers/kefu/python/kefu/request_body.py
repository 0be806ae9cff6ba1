"""What the API takes as a request body: JSON, in UTF-8, read strictly.

Powertools' request validation picks a body's parser by its media type, compared
case-sensitively (`APPLICATION/JSON` is refused), also reads forms and multipart (a multipart
body can pass as a chat request), and lets a body it cannot decode escape as an exception, a
500: base64 that is not, bytes that are not UTF-8, nesting deeper than the parser's stack, an
integer longer than `int` takes. Here a body is JSON (`application/json` in any case, UTF-8 when a
charset is named; no Content-Type counts as JSON) or it is refused before it is read (415), and a
body that cannot be read as one JSON document is invalid JSON (400).

A key given twice in one object is invalid JSON too: parsers disagree on which value wins (Python
keeps the last), so a WAF rule or a log and the chat service could each read a different request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from kefu.models import ErrorResponse

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.types import EventHandlerInstance

JSON_MEDIA_TYPE = "application/json"
# The API's bodies are flat objects; a cap well below the parser's recursion limit keeps a deep
# document from reaching anything recursive downstream (validation, error reports, logging).
MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 100
# The largest body read, as the local server takes (local/server.py): a chat message is at most
# 2,000 characters; API Gateway alone would hand on 10 MB to be parsed.
MAX_BODY_BYTES = 64 * 1024


# The OpenAPI documentation of an error answer, and of those any route that reads a body may
# give (kefu.api and kefu.agent_api both declare them).
ERROR_CONTENT: dict[str, Any] = {"application/json": {"model": ErrorResponse}}
BODY_ERRORS: dict[int, Any] = {
    400: {
        "description": "The body is not one UTF-8 JSON document (or repeats a key)",
        "content": ERROR_CONTENT,
    },
    413: {
        "description": f"The body is larger than {MAX_BODY_BYTES} bytes",
        "content": ERROR_CONTENT,
    },
    415: {"description": "The body is not sent as JSON", "content": ERROR_CONTENT},
}


class BodyTooLarge(ValueError):
    """The body is larger than `MAX_BODY_BYTES` (413); it is not read."""


class UnreadableBody(ValueError):
    """The body is not a JSON document this API reads; the message says why, for the client."""


def read_json(text: str) -> Any:
    """`json.loads`, stricter: each key once per object, no NaN or Infinity, integers of at most
    100 digits, at most 32 levels deep, and strings that are Unicode (no lone surrogates, which
    a `\\ud800` escape can smuggle in). Raises `ValueError` (`UnreadableBody` saying why)."""
    try:
        document = json.loads(
            text,
            object_pairs_hook=_one_value_per_key,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except RecursionError as exc:
        raise UnreadableBody(f"it is nested deeper than {MAX_DEPTH} levels") from exc
    _check_depth_and_text(document)
    return document


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON this API reads: media types are case-insensitive
    (RFC 9110 §8.3.1), and a body in a charset other than UTF-8 is not read."""
    if content_type is None or not content_type.strip():
        return True
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        return False
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() in ("utf-8", "utf8")
    return True


class JsonBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, for an API whose bodies are JSON only (see the module)."""

    def _get_body(self, app: EventHandlerInstance) -> Any:
        event = app.current_event
        content_type = event.headers.get("content-type")
        if not is_json(content_type):
            raise RequestUnsupportedContentType(
                "Unsupported content type",
                errors=[
                    {
                        "type": "unsupported_content_type",
                        "loc": ("body",),
                        "msg": f"Unsupported content type: {content_type}",
                        "input": {},
                        "ctx": {},
                    }
                ],
            )
        body = event.body or ""
        # Characters, not bytes, for a text body: a UTF-8 character is up to 4 bytes, so a
        # body under a quarter of the cap is within it either way.
        if len(body) > MAX_BODY_BYTES // 4 and len(_raw_bytes(body, event)) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"The body may be at most {MAX_BODY_BYTES} bytes.")
        try:
            return event.json_body
        except ValueError as exc:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": _why_unreadable(exc)},
                    }
                ]
            ) from exc


def _raw_bytes(body: str, event: Any) -> bytes:
    """The body's bytes as the client sent them (base64 is decoded; invalid base64 counts as
    its own length, and fails as JSON later)."""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body)
        except (binascii.Error, ValueError):
            return body.encode("utf-8", "surrogatepass")
    return body.encode("utf-8", "surrogatepass")


def _why_unreadable(exc: ValueError) -> str:
    """What a client can fix, without Python's wording: '' for a JSON syntax error."""
    if isinstance(exc, UnreadableBody):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    if isinstance(exc, binascii.Error | UnicodeEncodeError):
        # Base64 is ASCII: a body that cannot be encoded to bytes is not base64 either.
        return "it is marked as base64 but is not valid base64"
    return ""


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise UnreadableBody(f"the key {json.dumps(key[:40])} appears twice in one object")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise UnreadableBody(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # `1e400` is a JSON number that overflows to infinity: as much not a number as `Infinity`.
    number = float(text)
    if not math.isfinite(number):
        raise UnreadableBody(f"the number {text[:40]} is too large")
    return number


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise UnreadableBody(f"a number has more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _check_depth_and_text(document: Any) -> None:
    # A loop, not recursion: the document is untrusted and Python's stack is short.
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth == MAX_DEPTH:
                raise UnreadableBody(f"it is nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                value = list(value.values())
            pending.extend((child, depth + 1) for child in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnreadableBody("a string in it is not valid Unicode (a lone surrogate)") from exc
