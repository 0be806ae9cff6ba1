"""The always-on cost of each stage, read from its template, and the README that states it."""

from __future__ import annotations

import re

import pytest

from infra_cdk.assets import REPO_ROOT
from infra_cdk.cost import HOURS_A_MONTH, NAT_GATEWAY_HOUR, always_on, total
from tests.infra.synth import SynthesizedStage


def test_the_always_on_parts_follow_the_stage(each_stage: SynthesizedStage) -> None:
    config = each_stage.config
    lines = {line.item: line for line in always_on(each_stage.template_json)}

    assert lines["NAT gateways"].quantity == config.nat_gateways
    assert lines["NAT gateways"].monthly == pytest.approx(
        config.nat_gateways * NAT_GATEWAY_HOUR * HOURS_A_MONTH
    )
    data_nodes = lines[f"OpenSearch data nodes, {config.opensearch_instance_type}"]
    assert data_nodes.quantity == config.opensearch_instance_count
    assert lines["OpenSearch gp3 storage"].quantity == (
        config.opensearch_volume_size_gb * config.opensearch_instance_count
    )
    managers = [item for item in lines if item.startswith("OpenSearch cluster-manager")]
    assert len(managers) == (1 if config.opensearch_dedicated_master_count else 0)
    assert any(item.startswith("ElastiCache Serverless") for item in lines)
    snapshot = lines["Lambda SnapStart snapshot cache"]
    assert snapshot.quantity == config.chat_memory_mb / 1024
    assert snapshot.monthly == pytest.approx(config.chat_memory_mb / 1024 * 3.95, rel=0.01)


def test_the_readme_states_each_stages_monthly_total(each_stage: SynthesizedStage) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    row = re.search(rf"^\| `{each_stage.config.name}` \|.*$", readme, re.MULTILINE)
    assert row, f"README has no cost row for {each_stage.config.name}"
    assert f"${total(always_on(each_stage.template_json)):,.0f}" in row.group(0)
