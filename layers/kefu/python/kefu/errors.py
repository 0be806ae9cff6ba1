"""Domain exceptions. The API maps them to HTTP responses in one place (kefu.api)."""


class KefuError(Exception):
    """Base of every error the service raises on purpose."""


class DependencyUnavailable(KefuError):
    """An outside system (session store, index, model) failed or timed out."""


class ConfigurationError(KefuError):
    """The settings ask for something that cannot be built."""


class IndexNotReady(KefuError):
    """The knowledge index has no content yet: ingest a knowledge base first."""


class IndexWriteRejected(KefuError):
    """The search index refused some of the chunks written to it (a mapping or size problem):
    retrying the same write will not help, unlike `DependencyUnavailable`."""


class TicketNotFound(KefuError):
    """No hand-over ticket has this id."""


class TicketClosed(KefuError):
    """The ticket is closed: it takes no more replies."""


class AgentUnauthorised(KefuError):
    """An agent route was called without valid agent credentials (401)."""


class AgentForbidden(KefuError):
    """The caller is authenticated but may not use agent routes (403)."""


class SessionNotFound(KefuError):
    """No conversation has this id (or it expired)."""
