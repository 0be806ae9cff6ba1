"""What the chat function imports at cold start: its handler and the layer's chat path only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def _built_at_import(initialization_type: str | None, **settings: str) -> tuple[bool, str]:
    """Whether importing the handler, in an environment Lambda started this way, built the
    chat service; and what it logged."""
    from tests.lambda_env import LAMBDA

    env = {**LAMBDA, "PATH": "/usr/bin:/bin", "PYTHONPATH": f"layers/kefu/python:{REPO_ROOT}"}
    env.update(settings)
    if initialization_type:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization_type
    script = (
        "import functions.chat.handler\n"
        "from kefu.bootstrap import get_chat_service\n"
        "print(get_chat_service.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip().splitlines()[-1] == "1", done.stdout


def test_a_snapstart_or_provisioned_environment_builds_the_service_in_init() -> None:
    # SnapStart snapshots what init built; a restored environment's first request finds it.
    assert _built_at_import("snap-start")[0]
    assert _built_at_import("provisioned-concurrency")[0]
    # An on-demand environment builds at its first request, as before.
    assert not _built_at_import("on-demand")[0]
    assert not _built_at_import(None)[0]


def test_a_service_that_cannot_be_built_in_init_is_left_to_the_first_request() -> None:
    # An index setting naming no OpenSearch endpoint is a configuration error: init goes on,
    # logs it, and the first request answers it as one (503 not_configured).
    built, logged = _built_at_import(
        "snap-start", KEFU_INDEX="opensearch", POWERTOOLS_LOG_LEVEL="INFO"
    )

    assert not built
    assert "could not be built ahead" in logged


def test_a_stage_whose_claude_key_is_a_secret_leaves_it_out_of_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A key read into the snapshot would outlive its rotation in every restored environment.
    from kefu import bootstrap

    monkeypatch.setenv("KEFU_MODEL", "anthropic")
    monkeypatch.setenv("KEFU_ANTHROPIC_API_KEY_SECRET", "kefu/anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    bootstrap.get_settings.cache_clear()
    built: list[bool] = []
    monkeypatch.setattr(bootstrap, "get_chat_service", lambda: built.append(True))
    try:
        assert not bootstrap.build_ahead("snap-start")
        assert built == []
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-example")  # in the environment: built
        bootstrap.get_settings.cache_clear()
        assert bootstrap.build_ahead("snap-start")
        assert built == [True]
    finally:
        bootstrap.get_settings.cache_clear()
