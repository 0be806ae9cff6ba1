"""cdk-nag, cfn-lint and the acknowledgments that stand between them and the app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint
from constructs import IConstruct

from infra_cdk.app import build_app
from tests.infra.synth import SynthesizedStage, cdk_json_context

ACKNOWLEDGED = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
# CDK's own acknowledgments of its built-in template validation (the flow log's camelCase
# destination options): made inside aws-cdk-lib, not by the app.
CDK_OWN = "CloudFormation-Validate::"
# Regions to lint an environment-agnostic template against.
LINT_REGIONS = ["us-east-1", "eu-central-1", "ap-southeast-1"]
LINT_IGNORED = [
    # CDK makes a function depend on its role (already implied by GetAtt) and on the role's
    # policy, so the function never starts without its permissions: intended, not a mistake.
    "W3005",
]


def acknowledgments(root: IConstruct) -> Iterator[tuple[str, str, str]]:
    """(construct path, rule id, reason) for every rule the app acknowledged under `root`."""
    for node in root.node.find_all():
        for entry in node.node.metadata:
            if entry.type == ACKNOWLEDGED:
                for qualified_id, reason in entry.data.items():
                    if qualified_id.startswith(CDK_OWN):
                        continue
                    rule_id = qualified_id.split("::", 1)[-1]
                    yield node.node.path, rule_id, reason


def unacknowledged_findings(stage: SynthesizedStage) -> list[str]:
    report = AwsSolutionsChecks().validate_scope(stage.app)
    return [
        f"{violation.rule_name} ({violation.severity}) at "
        + ", ".join(str(resource.construct_path) for resource in violation.violating_resources)
        for violation in report.violations
    ]


def test_cdk_nag_finds_nothing_left_unacknowledged(each_stage: SynthesizedStage) -> None:
    assert unacknowledged_findings(each_stage) == []


def test_cdk_nag_finds_nothing_in_the_secrets_of_the_anthropic_and_order_apis(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    assert unacknowledged_findings(anthropic_with_orders) == []


def test_every_acknowledgment_is_explained(each_stage: SynthesizedStage) -> None:
    found = list(acknowledgments(each_stage.app))

    assert found
    for path, rule_id, reason in found:
        assert rule_id.startswith("AwsSolutions-"), (path, rule_id)
        assert len(reason.split()) >= 8, f"{rule_id} on {path} needs a real reason: {reason!r}"


def test_every_acknowledgment_silences_a_real_finding(
    dev: SynthesizedStage, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given the same app built with every acknowledgment ignored
    monkeypatch.setattr(Validations, "acknowledge", lambda self, *rules: None)
    bare = build_app(
        context={**cdk_json_context(), "stage": dev.config.name},
        outdir=str(tmp_path_factory.mktemp("cdk-unacknowledged")),
    )
    findings = [
        (violation.rule_name, str(resource.construct_path))
        for violation in AwsSolutionsChecks().validate_scope(bare).violations
        for resource in violation.violating_resources
    ]

    # Then each acknowledgment of the real app covers one of its findings: none is stale
    for path, rule_id, _ in acknowledgments(dev.app):
        assert any(
            rule == rule_id and (found_at == path or found_at.startswith(path + "/"))
            for rule, found_at in findings
        ), f"{rule_id} is acknowledged on {path} but nothing there raises it"


def test_cfn_lint_passes_on_the_synthesized_template(each_stage: SynthesizedStage) -> None:
    regions = [each_stage.config.region] if each_stage.config.region else LINT_REGIONS

    matches = lint(
        each_stage.template_file.read_text(),
        regions=regions,
        config=ManualArgs(regions=regions, ignore_checks=LINT_IGNORED),
    )

    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []
