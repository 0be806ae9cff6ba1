"""Any event API Gateway (REST, proxy integration) can hand the chat Lambda gets a JSON answer:
never a 5xx while its dependencies are healthy, every error in the project's shape, and an
error changes nothing.

Examples per run come from the Hypothesis profile (tests/conftest.py): 100 under `make test`,
1,000 with HYPOTHESIS_PROFILE=fuzz.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from tests.conftest import LambdaContext, reset_composition_root
from tests.functional.conftest import EVENT
from tests.functional.test_chat_api import turns_stored
from tests.fuzz_tally import off_shape, record

AGENT_KEY = "agent-key-for-properties"

valid_ids = st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)
ids = st.one_of(valid_ids, valid_ids, st.text(max_size=20))
# The API's routes with their methods (the customer's more often than the agents'), and any
# method on any path. Hypothesis picks a one_of's branches about evenly: a branch given twice
# is drawn twice as often.
customer_routes = st.sampled_from(
    [
        ("POST", "/v1/chat"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/health"),
        ("GET", "/v1/openapi.json"),
    ]
)
routes = st.one_of(
    st.just(("POST", "/v1/chat")),
    st.just(("POST", "/v1/feedback")),
    customer_routes,
    ids.map(lambda id_: ("GET", f"/v1/sessions/{id_}/messages")),
    st.sampled_from(["", "/abcdefgh12"]).map(lambda tail: ("GET", f"/v1/tickets{tail}")),
    st.tuples(st.sampled_from(["reply", "close"]), ids).map(
        lambda parts: ("POST", f"/v1/tickets/{parts[1]}/{parts[0]}")
    ),
)
methods = st.one_of(
    st.sampled_from(
        ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
    ),
    st.sampled_from(["get", "post", "Post", "options"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12),
)
paths = st.one_of(
    routes.map(lambda route: route[1]),
    st.text().map(lambda text: "/" + text),
)
requests_lines = st.one_of(routes, routes, st.tuples(methods, paths))
content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(
        [
            None,
            "",
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON; charset=UTF-8",
            'Application/Json;charset="utf-8"',
            "application/json; charset=utf-16",
            "application/json; charset",
            "application/jsonp",
            "application/problem+json",
            "text/plain",
            "text/json",
            "*/*",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
        ]
    ),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
# Bodies shaped like the API's requests (chat, feedback, an agent's reply), and mixtures.
messages = st.text(min_size=1, max_size=60)
chat_requests = st.fixed_dictionaries(
    {"message": messages},
    optional={"session_id": ids, "language": st.sampled_from(["en", "zh", "fr", ""])},
)
feedback_requests = st.fixed_dictionaries(
    {"session_id": ids, "rating": st.integers(-3, 8)},
    optional={"turn_id": ids, "comment": st.text(max_size=40)},
)
agent_replies = st.fixed_dictionaries({"text": messages}, optional={"agent": st.text(max_size=20)})
request_like = st.one_of(
    chat_requests,
    feedback_requests,
    agent_replies,
    st.dictionaries(
        st.sampled_from(["message", "session_id", "rating", "text", "language", "admin"]),
        json_values,
        max_size=4,
    ),
)
nasty_bodies = st.sampled_from(
    [
        "",
        "null",
        "[]",
        '"hi"',
        "[" * 2_000 + "]" * 2_000,
        '{"message": "hi", "n": ' + "9" * 5_000 + "}",
        '{"message": "a", "message": "b"}',
        '{"message": "\\ud800"}',
        '{"rating": NaN}',
        '{"message": "hi"',
    ]
)
documents = st.one_of(
    request_like.map(json.dumps),
    request_like.map(lambda value: json.dumps(value, ensure_ascii=False)),
    json_values.map(json.dumps),
    nasty_bodies,
    st.text(),
)
encodings = st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1"])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str | None, bool]:
    """A body and its isBase64Encoded flag: text as API Gateway passes it, or base64 of any
    bytes (valid or not), or a body marked base64 that is not."""
    form = draw(
        st.sampled_from(["none", "text", "text", "text", "base64", "bytes-as-text", "not-base64"])
    )
    if form == "none":
        return None, draw(st.booleans())
    if form == "text":
        return draw(documents), False
    raw = draw(
        st.one_of(
            st.tuples(documents, encodings).map(
                lambda pair: pair[0].encode(pair[1], errors="replace")
            ),
            st.binary(max_size=200),
        )
    )
    if form == "base64":
        return base64.b64encode(raw).decode(), True
    if form == "bytes-as-text":
        return raw.decode("latin-1"), False
    return draw(st.text(max_size=40)), True


@st.composite
def header_sets(draw: st.DrawFn) -> dict[str, str] | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # API Gateway sends null when a request has no headers
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "x-api-key": "redacted"}
    content_type = draw(content_types)
    if content_type is not None:
        headers[draw(st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]))] = (
            content_type
        )
    agent_key = draw(st.sampled_from([None, AGENT_KEY, AGENT_KEY, "wrong", ""]))
    if agent_key is not None:
        headers["X-Agent-Key"] = agent_key
    return headers


json_content_types = st.sampled_from(
    [
        None,
        "application/json",
        "APPLICATION/JSON; charset=UTF-8",
        'application/json;charset="utf-8"',
    ]
)
# A request a client of the API would send (its values may still be wrong: an unknown session,
# a rating of 9, an empty message), so that generated events get past the gateway's edge too.
api_requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/chat"), chat_requests.map(json.dumps)),
    st.tuples(st.just("POST"), st.just("/v1/chat"), chat_requests.map(json.dumps)),
    st.tuples(st.just("POST"), st.just("/v1/feedback"), feedback_requests.map(json.dumps)),
    st.tuples(
        st.just("POST"),
        ids.map(lambda id_: f"/v1/tickets/{id_}/reply"),
        agent_replies.map(json.dumps),
    ),
    st.tuples(st.just("GET"), ids.map(lambda id_: f"/v1/sessions/{id_}/messages"), st.none()),
)


@st.composite
def proxy_events(draw: st.DrawFn) -> dict[str, Any]:
    """An API Gateway REST proxy (`{proxy+}`) event, from the sample event: a request as the
    API's clients send them, one to the API's routes as JSON with any body, or anything at all."""
    event = copy.deepcopy(EVENT)
    kind = draw(st.sampled_from(["client", "any body", "anything"]))
    if kind == "anything":
        method, path = draw(requests_lines)
        event["body"], event["isBase64Encoded"] = draw(bodies())
        headers = draw(header_sets())
    else:
        method, path, event["body"] = draw(api_requests)
        event["isBase64Encoded"] = False
        if kind == "any body":
            event["body"], event["isBase64Encoded"] = draw(bodies())
        elif event["body"] is not None and draw(st.integers(0, 3)) == 0:
            event["body"] = base64.b64encode(event["body"].encode()).decode()
            event["isBase64Encoded"] = True
        content_type = draw(json_content_types)
        headers = {"X-Agent-Key": AGENT_KEY} | (
            {} if content_type is None else {"Content-Type": content_type}
        )
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["resource"] = event["requestContext"]["resourcePath"] = "/{proxy+}"
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["headers"] = headers
    event["multiValueHeaders"] = (
        None if headers is None else {name: [value] for name, value in headers.items()}
    )
    query = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(["after", "status", "limit", "q"]), st.text(max_size=12), max_size=3
        )
    )
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = (
        None if query is None else {name: [value] for name, value in query.items()}
    )
    return event


@pytest.fixture
def agents_enabled(configured: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agent routes open to the agent key, so that generated requests can get past them."""
    monkeypatch.setenv("KEFU_AGENT_API_KEY", AGENT_KEY)
    reset_composition_root()
    return configured


# The data directory is shared by every example on purpose: the state valid requests leave
# (sessions, tickets) is what later examples run into.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(event=proxy_events())
def test_any_proxy_event_gets_json_and_never_a_5xx(
    agents_enabled: Path, event: dict[str, Any]
) -> None:
    from functions.chat.handler import lambda_handler

    turns_before = turns_stored(agents_enabled)

    response = lambda_handler(event, LambdaContext())

    status = response["statusCode"]
    # A CORS preflight (204) has no content; everything else is JSON.
    problem = (
        None if status == 204 and not response["body"] else off_shape(status, response["body"])
    )
    record("handler events", status, problem)
    assert status < 500, response
    if status == 204:  # a CORS preflight: no content
        assert not response["body"]
        return
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
    document = json.loads(response["body"])
    if status < 400:
        tally(f"{status}")  # the mix shows with --hypothesis-show-statistics
        return
    assert set(document) == {"error"}, document
    assert set(document["error"]) == {"code", "message"}, document
    assert isinstance(document["error"]["code"], str)
    assert isinstance(document["error"]["message"], str)
    tally(f"{status} {document['error']['code']}")
    assert turns_stored(agents_enabled) == turns_before
    if status == 405:
        assert response["multiValueHeaders"]["Allow"]
