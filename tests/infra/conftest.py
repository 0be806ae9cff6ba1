"""Each stage is synthesized once per session (jsii takes seconds to start), on first use."""

from __future__ import annotations

import pytest

from tests.infra.synth import STAGE_NAMES, SynthesizedStage, synthesize

# A global cross-region inference profile: the widest Bedrock permission the app can grant.
GLOBAL_PROFILE_MODEL_ID = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
# Claude through Anthropic's API, and the enterprise's order API, each with its key in a secret.
ANTHROPIC_OUTSIDE_AWS = {
    "chat_model": "anthropic",
    "anthropic_model": "claude-sonnet-4-5",
    "anthropic_api_key_secret_name": "kefu/dev/anthropic-api-key",
    "orders_url": "https://orders.example.com/api",
    "orders_api_key_secret_name": "kefu/dev/orders-api-key",
    "memory_tokens": 4096,
}


@pytest.fixture(scope="session")
def _synthesized() -> dict[str, SynthesizedStage]:
    return {}


def _stage(
    name: str, cache: dict[str, SynthesizedStage], factory: pytest.TempPathFactory
) -> SynthesizedStage:
    if name not in cache:
        cache[name] = synthesize(name, factory.mktemp(f"cdk-{name}"))
    return cache[name]


@pytest.fixture(scope="session")
def dev(
    _synthesized: dict[str, SynthesizedStage], tmp_path_factory: pytest.TempPathFactory
) -> SynthesizedStage:
    """The default stage, as `cdk synth` without `-c stage=` gives it."""
    return _stage("dev", _synthesized, tmp_path_factory)


@pytest.fixture(scope="session", params=STAGE_NAMES)
def each_stage(
    request: pytest.FixtureRequest,
    _synthesized: dict[str, SynthesizedStage],
    tmp_path_factory: pytest.TempPathFactory,
) -> SynthesizedStage:
    """Every stage defined in cdk.json, for what must hold in all of them."""
    return _stage(request.param, _synthesized, tmp_path_factory)


@pytest.fixture(scope="session")
def global_profile(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStage:
    """The dev stage answering through a global cross-region inference profile."""
    return synthesize(
        "dev",
        tmp_path_factory.mktemp("cdk-global-profile"),
        overrides={"bedrock_model_id": GLOBAL_PROFILE_MODEL_ID},
    )


@pytest.fixture(scope="session")
def anthropic_with_orders(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStage:
    """The dev stage answering through Anthropic's API and looking orders up in an order API."""
    return synthesize(
        "dev", tmp_path_factory.mktemp("cdk-anthropic-orders"), overrides=ANTHROPIC_OUTSIDE_AWS
    )


@pytest.fixture(scope="session")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStage:
    """The dev stage with no API key, two allowed origins and no SnapStart."""
    return synthesize(
        "dev",
        tmp_path_factory.mktemp("cdk-keyless"),
        overrides={
            "api_key_required": False,
            "chat_snap_start": False,
            "faq_threshold": 0.62,
            "head_threshold": 0.3,
            "passage_threshold": 0.58,
            "similarity_threshold": 0.7,
            "cors_allow_origins": ["https://support.example.com", "https://help.example.com"],
        },
    )
