"""The agents' routes: list, read, answer and close hand-over tickets.

In AWS, API Gateway authorises them with IAM (SigV4-signed requests of the enterprise's agent
role); the function checks that the gateway did. Locally, agents present a key of their own
(`X-Agent-Key`, `KEFU_AGENT_API_KEY`).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

from kefu.bootstrap import get_desk, get_settings
from kefu.errors import AgentForbidden, AgentUnauthorised
from kefu.models import AgentReply, TicketList, TicketView
from kefu.request_body import BODY_ERRORS, ERROR_CONTENT
from kefu.threads import ticket_summary, ticket_view
from kefu.tickets import TicketStatus

router = Router()

TICKET_ID = Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="The ticket's id.")
_ERROR_BODY = ERROR_CONTENT
_AGENT_ERRORS: dict[int, Any] = {
    401: {"description": "No or a wrong agent key", "content": _ERROR_BODY},
    403: {"description": "Not an agent", "content": _ERROR_BODY},
    404: {"description": "No such ticket", "content": _ERROR_BODY},
    422: {"description": "The request does not match the schema", "content": _ERROR_BODY},
    503: {
        "description": "The ticket store is unavailable; retry after `Retry-After` seconds",
        "content": _ERROR_BODY,
    },
}

# Where the agent routes are: every request to them needs an agent, however malformed.
AGENT_PATHS = ("/v1/tickets",)


def require_agent() -> str:
    """Who the calling agent is; raises when the caller is none."""
    settings = get_settings()
    event = router.current_event
    if settings.agent_auth == "iam":
        # The method's AWS_IAM authorisation already verified the signature; an unsigned
        # request here means a route was deployed without it.
        identity = (event.get("requestContext") or {}).get("identity") or {}
        arn = identity.get("userArn")
        if not arn:
            raise AgentForbidden("Agent routes take IAM-signed requests only.")
        return arn
    key = settings.agent_api_key
    if key is None:
        raise AgentForbidden("Agent routes are not enabled: set KEFU_AGENT_API_KEY.")
    given = event.headers.get("x-agent-key") or event.headers.get("X-Agent-Key")
    if not given:
        raise AgentUnauthorised("Send the agent key in the X-Agent-Key header.")
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise AgentUnauthorised("The agent key is not valid.")
    return "agent"


@router.get(
    "/v1/tickets",
    summary="Hand-over tickets by status (agents)",
    responses={200: {"description": "The tickets"}, **_AGENT_ERRORS},
)
def list_tickets(
    status: Annotated[TicketStatus, Query()] = "open",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TicketList:
    require_agent()
    tickets = get_desk().tickets.by_status(status, limit=limit, newest_first=True)
    return TicketList(tickets=[ticket_summary(t) for t in tickets])


@router.get(
    "/v1/tickets/<ticket_id>",
    summary="One ticket, with the conversation and what the bot knew (agents)",
    responses={200: {"description": "The ticket"}, **_AGENT_ERRORS},
)
def read_ticket(ticket_id: Annotated[str, TICKET_ID]) -> TicketView:
    require_agent()
    return ticket_view(get_desk().get(ticket_id))


@router.post(
    "/v1/tickets/<ticket_id>/reply",
    summary="Answer the customer (agents)",
    responses={
        200: {"description": "The ticket with the reply"},
        409: {"description": "The ticket is closed", "content": _ERROR_BODY},
        **_AGENT_ERRORS,
        **BODY_ERRORS,
    },
)
def reply(
    ticket_id: Annotated[str, TICKET_ID], body: Annotated[AgentReply, Body(embed=False)]
) -> TicketView:
    agent = require_agent()
    return ticket_view(get_desk().reply(ticket_id, body.text, body.agent or _short(agent)))


@router.post(
    "/v1/tickets/<ticket_id>/close",
    summary="Close the ticket; the conversation returns to the bot (agents)",
    responses={200: {"description": "The closed ticket"}, **_AGENT_ERRORS},
)
def close(ticket_id: Annotated[str, TICKET_ID]) -> TicketView:
    require_agent()
    return ticket_view(get_desk().close(ticket_id))


def _short(agent: str) -> str:
    """An IAM ARN's last part (the session or user name), as agents see it."""
    return agent.rsplit("/", 1)[-1][:64]
