"""What the chat function imports at cold start: its handler and the layer's chat path only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).parents[2]


def test_the_chat_handler_imports_no_training_ingestion_or_unconfigured_adapter() -> None:
    # Given a fresh interpreter, as a Lambda cold start is
    script = (
        "import json, sys; import functions.chat.handler; print(json.dumps(sorted(sys.modules)))"
    )

    # When only the chat handler is imported
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    modules = set(json.loads(done.stdout))

    # Then neither head training nor ingestion nor an adapter it is not configured for is loaded
    assert "kefu.head" in modules  # the head's model ranks candidates on the chat path
    unwanted = {
        "kb_ingest",
        "kb_ingest.head_training",
        "kefu.adapters.opensearch",
        "opensearchpy",
        "kefu.adapters.anthropic_model",
        "anthropic",
    }
    assert not unwanted & modules, sorted(unwanted & modules)
    assert not any(
        name.startswith(("kb_ingest", "torch", "anthropic", "httpx2")) for name in modules
    )


def test_claude_on_bedrock_does_not_load_the_anthropic_sdk() -> None:
    # Given a fresh interpreter that builds the Bedrock model, as KEFU_MODEL=bedrock does
    script = (
        "import json, sys; from kefu.bootstrap import build_model; "
        "from kefu.settings import Settings; "
        "build_model(Settings(model='bedrock', aws_region='us-east-1')); "
        "print(json.dumps(sorted(sys.modules)))"
    )

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    modules = set(json.loads(done.stdout))

    # Then the shared Claude prompt is loaded, the Anthropic SDK is not
    assert {"kefu.adapters.bedrock_model", "kefu.adapters.claude_prompt"} <= modules
    assert not any(name.startswith(("anthropic", "httpx2")) for name in modules)
