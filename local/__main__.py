"""`python -m local [--port 8000]`: ingest the sample knowledge base and serve the product."""

from __future__ import annotations

import argparse
import os
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

    from kb_ingest import SAMPLE_KB_PATHS
    from kb_ingest.pipeline import ingest
    from kefu.bootstrap import get_chat_service, get_embedder, get_index, get_settings
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

    server = make_server(args.host, args.port)
    port = server.server_address[1]
    print(
        f"Kefu is serving on http://{args.host}:{port}  (chat page at /, API under /v1)", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
