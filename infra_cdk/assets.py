"""The folders the CDK app packages as Lambda assets, resolved from the repository root.

Resolved from this file, not the working directory, so the app synthesizes the same from the CLI,
from pytest and from any folder.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Filled by `make layer` (layers/build_layer.py): wheels for Python 3.12 on arm64, plus `kefu`.
SHARED_LAYER_DIR = REPO_ROOT / ".build" / "layer"
CHAT_FUNCTION_DIR = REPO_ROOT / "functions" / "chat"
# The ingest function's asset also takes kb_ingest and its parsers (infra_cdk/bundling.py).
INGEST_FUNCTION_DIR = REPO_ROOT / "functions" / "ingest"
# Hand-over: completes and announces tickets (SQS), re-queues stuck ones (schedule).
ESCALATION_FUNCTION_DIR = REPO_ROOT / "functions" / "escalation"
# The monthly export of closed hand-overs and the knowledge-gap report.
EXPORT_FUNCTION_DIR = REPO_ROOT / "functions" / "export"

# Never part of a function asset.
CODE_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", "tests"]
