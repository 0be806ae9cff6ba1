"""The REST API: routes, validation and the mapping of errors to HTTP, in one place."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from functools import partial
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder, Route
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from kefu import __version__
from kefu.agent_api import AGENT_PATHS, require_agent
from kefu.agent_api import router as agent_router
from kefu.bootstrap import get_chat_service, get_desk, get_settings
from kefu.errors import (
    AgentForbidden,
    AgentUnauthorised,
    ConfigurationError,
    DependencyUnavailable,
    IndexNotReady,
    SessionNotFound,
    TicketClosed,
    TicketNotFound,
)
from kefu.models import (
    MAX_MESSAGE_CHARS,
    SESSION_ID_PATTERN,
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    SessionMessages,
)
from kefu.observability import emit, logger, metrics
from kefu.request_body import (
    BODY_ERRORS,
    ERROR_CONTENT,
    BodyTooLarge,
    JsonBodyValidation,
    read_json,
)


class _RequestState(threading.local):
    """The request a thread is resolving: its event, its Lambda context, the routing context
    (route, path arguments, parsed request) and the middleware frames it went through."""

    def __init__(self) -> None:
        self.event: BaseProxyEvent | None = None
        self.lambda_context: LambdaContext | None = None
        self.context: dict[str, Any] = {}
        self.processed_stack_frames: list[str] = []


class ConcurrentRestResolver(APIGatewayRestResolver):
    """The REST resolver, with the request it resolves kept per thread.

    Powertools keeps the event being resolved in a class attribute and the routing context in
    the resolver: right for Lambda, which hands an environment one request at a time, but the
    local server (`local.server`) answers many at once on threads, and a request would be
    routed with another's path or validated with another's body (another customer's message).
    Powertools' own `HttpResolver` keeps the same attributes per request, as here. And a route
    builds its middleware stack in place on its first call: two first calls at once would wrap
    it twice, for good, so each route's stack is built alone, before the call (a route made for
    a 404 or a preflight is built each time; the lock is held for the build only).
    """

    _request = _RequestState()
    _stack_build = threading.Lock()

    @property  # type: ignore[override]
    def current_event(self) -> BaseProxyEvent:
        assert self._request.event is not None, "no request is being resolved on this thread"
        return self._request.event

    @current_event.setter
    def current_event(self, value: BaseProxyEvent) -> None:
        self._request.event = value

    @property
    def lambda_context(self) -> LambdaContext:
        assert self._request.lambda_context is not None
        return self._request.lambda_context

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self._request.lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        return self._request.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._request.context = value

    @property
    def processed_stack_frames(self) -> list[str]:
        return self._request.processed_stack_frames

    @processed_stack_frames.setter
    def processed_stack_frames(self, value: list[str]) -> None:
        self._request.processed_stack_frames = value

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Powertools also sets them on its BaseRouter class, which every thread shares.
        self.current_event = self._to_proxy_event(dict(event))
        self.lambda_context = context
        return super().resolve(event, context)

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route takes at `path` (none: no such path), for a 405's `Allow`."""
        path = self._remove_prefix(path)
        routes = self._static_routes + self._dynamic_routes
        methods = {route.method for route in routes if route.rule.match(path)}
        if methods and self._cors_enabled:
            methods.add("OPTIONS")  # a preflight is answered on every path
        return sorted(methods)

    def _call_route(self, route: Route, route_arguments: dict[str, str]) -> ResponseBuilder:
        if not route._middleware_stack_built:
            with self._stack_build:
                if not route._middleware_stack_built:
                    route._build_middleware_stack(
                        router_middlewares=self._router_middlewares, app=self
                    )
        return super()._call_route(route, route_arguments)


_origins = get_settings().cors_allow_origins
app = ConcurrentRestResolver(
    enable_validation=True,
    # No origins configured: no CORS headers at all, so no other site's page may call the API.
    cors=(
        CORSConfig(allow_origin=_origins[0], extra_origins=_origins[1:], max_age=600)
        if _origins
        else None
    ),
    # Chinese answers travel as UTF-8, not as \uXXXX escapes.
    serializer=partial(json.dumps, separators=(",", ":"), ensure_ascii=False, cls=Encoder),
    json_body_deserializer=read_json,
)
# Bodies are JSON only, read strictly (kefu.request_body); Powertools' own validation middleware
# reads forms and multipart too, and compares media types case-sensitively.
app._request_validation_middleware = JsonBodyValidation()

app.include_router(agent_router)

_ERROR_BODY = ERROR_CONTENT
_ERRORS: dict[int, Any] = {
    **BODY_ERRORS,
    422: {"description": "The body does not match the schema", "content": _ERROR_BODY},
    503: {
        "description": "A dependency is unavailable; retry after `Retry-After` seconds",
        "content": _ERROR_BODY,
    },
}
# How long a client should wait before it retries a 503 (by error code).
_RETRY_AFTER_SECONDS = {"index_not_ready": 60, "not_configured": 60}
_RETRY_AFTER_DEFAULT_SECONDS = 5
_NOT_FOUND: dict[int, Any] = {404: {"description": "No such conversation", "content": _ERROR_BODY}}


def _error(
    status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        retry_after = _RETRY_AFTER_SECONDS.get(code, _RETRY_AFTER_DEFAULT_SECONDS)
        headers = {**(headers or {}), "Retry-After": str(retry_after)}
    return Response(
        status_code=status.value,
        content_type="application/json",
        body=ErrorResponse.of(code, message),
        headers=headers,
    )


@app.post(
    "/v1/chat",
    summary="Send a customer message and get the answer",
    responses={200: {"description": "The answer"}, **_ERRORS},
)
def chat(request: Annotated[ChatRequest, Body(embed=False)]) -> ChatResponse:
    response = get_chat_service().handle(request)
    metrics.add_dimension(name="outcome", value=response.outcome)
    metrics.add_metric(name="ChatTurns", unit=MetricUnit.Count, value=1)
    return response


@app.post(
    "/v1/feedback",
    summary="Rate the conversation (or one answer); below 3 hands it to a human",
    responses={200: {"description": "The rating was recorded"}, **_ERRORS, **_NOT_FOUND},
)
def feedback(request: Annotated[FeedbackRequest, Body(embed=False)]) -> FeedbackResponse:
    return get_chat_service().feedback(request)


@app.get(
    "/v1/sessions/<session_id>/messages",
    summary="The hand-over thread: what the customer and human agents wrote",
    responses={200: {"description": "The messages"}, **_ERRORS, **_NOT_FOUND},
)
def session_messages(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    after: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9_-]{1,80}$", description="Only messages after this one."),
    ] = None,
) -> SessionMessages:
    from kefu.threads import session_messages as thread

    service = get_chat_service()
    return thread(service.sessions, get_desk(), session_id, after=after)


@app.get("/v1/health", summary="Liveness check")
def health() -> HealthResponse:
    return HealthResponse(status="ok", version=__version__)


@app.get("/v1/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(
        status_code=200, content_type="application/json", body=json.dumps(openapi_document())
    )


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as /v1/openapi.json serves it."""
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title="Kefu customer service API",
            version=__version__,
            description=(
                "Chat with the AI customer-service agent; it answers from the knowledge base."
            ),
        )
    )
    return document


@app.exception_handler([RequestValidationError, RequestUnsupportedContentType])
def invalid_request(
    exc: RequestValidationError | RequestUnsupportedContentType,
) -> Response[Any]:
    errors = exc.errors()
    # Powertools reports a response that fails its schema as a RequestValidationError too: that
    # is our fault, not the client's.
    if any(tuple(error.get("loc", ()))[:1] == ("response",) for error in errors):
        return internal_error(exc)
    # The body is checked before a route runs: an agent route's caller is checked first, so
    # an unauthorised caller learns nothing of the route's schema.
    refused = _agent_refusal()
    if refused is not None:
        return refused
    if isinstance(exc, RequestUnsupportedContentType):
        return _error(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as UTF-8 JSON with Content-Type: application/json.",
        )
    for error in errors:
        if error.get("type") == "json_invalid":
            why = (error.get("ctx") or {}).get("error") or ""
            return _error(
                HTTPStatus.BAD_REQUEST,
                "malformed_json",
                f"The request body is not valid JSON{': ' + why if why else ''}.",
            )
    return _error(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_request", _describe(errors))


@app.not_found
def not_found(_: NotFoundError) -> Response[Any]:
    event = app.current_event
    allowed = app.allowed_methods(event.path)
    if allowed:
        return _error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "method_not_allowed",
            f"{_shown(event.path)} does not take {_shown(event.http_method)}; "
            f"it takes {', '.join(allowed)}.",
            headers={"Allow": ", ".join(allowed)},
        )
    return _error(
        HTTPStatus.NOT_FOUND,
        "not_found",
        f"No route for {_shown(event.http_method)} {_shown(event.path)}.",
    )


def resolve(event: Any, context: LambdaContext) -> dict[str, Any]:
    """The answer to an API Gateway REST proxy event; anything else handed to the function (a
    direct invocation, a misrouted trigger) is answered 400 in the API's shape, unrouted."""
    if not (
        isinstance(event, Mapping)
        and isinstance(event.get("httpMethod"), str)
        and isinstance(event.get("path"), str)
        and isinstance(event.get("headers") or {}, Mapping)
    ):
        logger.warning("not an API Gateway proxy event", extra={"type": type(event).__name__})
        return {
            "statusCode": HTTPStatus.BAD_REQUEST.value,
            "multiValueHeaders": {"Content-Type": ["application/json"]},
            "body": json.dumps(
                ErrorResponse.of(
                    "not_a_proxy_event", "The function takes API Gateway REST proxy events only."
                )
            ),
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)


def _agent_refusal() -> Response[Any] | None:
    """An agent route's caller is checked before its body is: an unauthorised caller learns
    nothing of what the route takes. The refusal, or None (not an agent route, or an agent)."""
    if not app.current_event.path.startswith(AGENT_PATHS):
        return None
    try:
        require_agent()
    except AgentUnauthorised as refused:
        return agent_unauthorised(refused)
    except AgentForbidden as refused:
        return agent_forbidden(refused)
    return None


def _shown(text: str, limit: int = 100) -> str:
    """What a client sent, as an error message repeats it: at most `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit]}…"


@app.exception_handler(BodyTooLarge)
def body_too_large(exc: BodyTooLarge) -> Response[Any]:
    refused = _agent_refusal()
    if refused is not None:
        return refused
    return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large", str(exc))


@app.exception_handler(SessionNotFound)
def session_not_found(exc: SessionNotFound) -> Response[Any]:
    return _error(
        HTTPStatus.NOT_FOUND, "session_not_found", "No conversation has this id (or it expired)."
    )


@app.exception_handler(TicketNotFound)
def ticket_not_found(exc: TicketNotFound) -> Response[Any]:
    return _error(HTTPStatus.NOT_FOUND, "ticket_not_found", f"No ticket has the id {exc}.")


@app.exception_handler(TicketClosed)
def ticket_closed(exc: TicketClosed) -> Response[Any]:
    return _error(
        HTTPStatus.CONFLICT, "ticket_closed", "The ticket is closed; it takes no replies."
    )


@app.exception_handler(AgentUnauthorised)
def agent_unauthorised(exc: AgentUnauthorised) -> Response[Any]:
    return _error(HTTPStatus.UNAUTHORIZED, "unauthorised", str(exc))


@app.exception_handler(AgentForbidden)
def agent_forbidden(exc: AgentForbidden) -> Response[Any]:
    return _error(HTTPStatus.FORBIDDEN, "forbidden", str(exc))


@app.exception_handler(IndexNotReady)
def index_not_ready(exc: IndexNotReady) -> Response[Any]:
    return _error(HTTPStatus.SERVICE_UNAVAILABLE, "index_not_ready", str(exc))


@app.exception_handler(ConfigurationError)
def not_configured(exc: ConfigurationError) -> Response[Any]:
    logger.exception("the service cannot be built from its settings")
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "not_configured",
        "The service is not fully configured yet; please try again later.",
    )


@app.exception_handler(DependencyUnavailable)
def dependency_unavailable(exc: DependencyUnavailable) -> Response[Any]:
    logger.exception("dependency unavailable")
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "The service is temporarily unavailable; please retry.",
    )


@app.exception_handler(Exception)
def internal_error(exc: Exception) -> Response[Any]:
    # Anything no handler above names is a bug: the client gets JSON, the log the traceback.
    event = app.current_event
    logger.exception(
        "unexpected error answering %s %s", _shown(event.http_method), _shown(event.path)
    )
    # A bug answered 500 is no Lambda error: it is counted here, for an alarm to watch.
    emit("InternalErrors")
    return _error(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "internal_error",
        "Something went wrong on our side; please try again later.",
    )


def _describe(errors: Any) -> str:
    """One readable sentence per problem, naming the field: `message: too long (max 2000)`."""
    messages = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "request")]
        field = ".".join(location) or "body"
        kind = error.get("type", "")
        if kind == "string_too_long" and field == "message":
            text = f"must be at most {MAX_MESSAGE_CHARS} characters"
        elif kind == "string_pattern_mismatch" and field == "session_id":
            text = "must be a session id returned by this service (8-64 letters, digits, - or _)"
        elif kind == "missing":
            text = "is required"
        elif kind == "extra_forbidden":
            text = "is not a known field"
        elif kind in ("model_type", "model_attributes_type") and field == "body":
            text = "must be a JSON object"
        else:
            text = str(error.get("msg", "is invalid"))
        messages.append(f"{field}: {text}")
    return "; ".join(messages) or "The request is invalid."
