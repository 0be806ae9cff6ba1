"""`python -m local [--port 8000]`: ingest the sample knowledge base and serve the product."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--kb",
        type=Path,
        nargs="+",
        default=None,
        help="knowledge-base files or folders to serve (default: the bundled sample KB)",
    )
    args = parser.parse_args(argv)

    # Powertools reads its own settings from the environment; give local mode quiet defaults.
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kefu-chat")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Kefu")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # Local mode answers order questions from the bundled sample order book.
    os.environ.setdefault("KEFU_ORDERS", "sample")
    # A health check publishes no metric; Powertools warns about that on every such request.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    agent_key = _agent_key()

    from kb_ingest import SAMPLE_KB_PATHS
    from kb_ingest.pipeline import ingest
    from kefu.bootstrap import get_chat_service, get_embedder, get_index, get_settings
    from local.escalation_worker import EscalationWorker
    from local.server import make_server

    settings = get_settings()
    get_chat_service()  # built first: a configuration error stops here, before indexing
    if settings.index == "embedded":
        embedder = get_embedder()
        print(f"Indexing the sample knowledge base with {embedder.name} …", flush=True)
        report = ingest(
            args.kb or SAMPLE_KB_PATHS,
            index=get_index(),
            embedder=embedder,
            tenant=settings.tenant,
            prune=True,
        )
        print(report.summary(), flush=True)

    # Hand-overs queued by the chat turns are completed here, as the escalation Lambda does.
    # The chat handler is imported before the worker and the server threads run, as
    # `EscalationWorker.start` imports its own (concurrent first imports of one package can
    # fail with a half-initialised module).
    import functions.chat.handler  # noqa: F401
    from kefu.adapters.queues import SqliteQueue

    worker = EscalationWorker(
        SqliteQueue(settings.queue_path, visibility_timeout=5.0),
        sweep_seconds=min(60.0, settings.sweep_after_seconds),
    ).start()
    server = make_server(args.host, args.port)
    port = server.server_address[1]
    print(
        f"Kefu is serving on http://{args.host}:{port}  (chat page at /, API under /v1)\n"
        f"Agent desk at http://{args.host}:{port}/agent  (agent key: {agent_key})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
        server.server_close()
    return 0


def _agent_key() -> str:
    """The agents' key: KEFU_AGENT_API_KEY, else one kept in the data folder across runs."""
    from kefu.settings import Settings

    settings = Settings()
    if settings.agent_api_key is not None:
        return settings.agent_api_key.get_secret_value()
    folder = settings.data_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agent-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    key = path.read_text().strip()
    os.environ["KEFU_AGENT_API_KEY"] = key
    return key


if __name__ == "__main__":
    sys.exit(main())
