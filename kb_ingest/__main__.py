"""`python -m kb_ingest PATH... [--target local] [--embedder e5|hashing]`: index files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kb_ingest.pipeline import ingest
from kefu.bootstrap import build_embedder, build_index
from kefu.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb_ingest", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="files or folders to ingest")
    parser.add_argument("--target", choices=["local"], default="local")
    parser.add_argument("--embedder", choices=["e5", "hashing"], default=None)
    parser.add_argument("--tenant", default=None)
    parser.add_argument(
        "--prune", action="store_true", help="remove chunks that no given file produced"
    )
    args = parser.parse_args(argv)

    overrides = {"embedder": args.embedder} if args.embedder else {}
    settings = Settings(**overrides)
    tenant = args.tenant or settings.tenant
    report = ingest(
        args.paths,
        index=build_index(settings),
        embedder=build_embedder(settings),
        tenant=tenant,
        prune=args.prune,
    )
    print(report.summary())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
