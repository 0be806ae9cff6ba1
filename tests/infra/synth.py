"""Synthesize the CDK app the way `cdk synth -c stage=<name>` does, and find things in it.

The same context as cdk.json, the cdk-nag plugin and CDK's built-in template validation all run:
a finding that is not acknowledged fails the synthesis, as it fails `cdk synth`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before the first jsii import: quiets the Node.js end-of-life banner.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App
from aws_cdk.assertions import Match, Template

from infra_cdk.app import build_app
from infra_cdk.assets import REPO_ROOT
from infra_cdk.config import StageConfig, stage_config_from_context

CHAT_SERVICE = "kefu-chat"
INGEST_SERVICE = "kefu-ingest"
HEAD_UPGRADE_SERVICE = "kefu-head-upgrade"
ESCALATION_SERVICE = "kefu-escalation"
SWEEPER_SERVICE = "kefu-sweeper"
EXPORT_SERVICE = "kefu-export"
# How an environment-agnostic template spells the stack's partition, region and account.
PARTITION = {"Ref": "AWS::Partition"}
REGION = {"Ref": "AWS::Region"}
ACCOUNT = {"Ref": "AWS::AccountId"}


def joined(*parts: Any) -> dict[str, Any]:
    """An `Fn::Join` of `parts` with no separator, as CDK renders an ARN."""
    return {"Fn::Join": ["", list(parts)]}


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return context


STAGE_NAMES = sorted(cdk_json_context()["stages"])


@dataclass(frozen=True)
class SynthesizedStage:
    config: StageConfig
    app: App
    template_file: Path
    template_json: dict[str, Any]
    template: Template

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template_json["Resources"]
        return resources

    def only_logical_id(self, resource_type: str, props: Any = None) -> str:
        """The logical id of the one matching resource, found rather than hard-coded."""
        found = self.template.find_resources(
            resource_type, {"Properties": props} if props is not None else None
        )
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found))

    def function_id(self, service: str) -> str:
        """The logical id of the function whose Powertools service name is `service`."""
        return self.only_logical_id(
            "AWS::Lambda::Function",
            {"Environment": {"Variables": Match.object_like({"POWERTOOLS_SERVICE_NAME": service})}},
        )

    def role_id(self, service: str) -> str:
        role_id: str = self.resources[self.function_id(service)]["Properties"]["Role"][
            "Fn::GetAtt"
        ][0]
        return role_id

    def chat_function_id(self) -> str:
        return self.function_id(CHAT_SERVICE)

    def chat_alias_id(self) -> str:
        """The alias API Gateway invokes the chat function through."""
        return self.only_logical_id(
            "AWS::Lambda::Alias", {"FunctionName": {"Ref": self.chat_function_id()}}
        )

    def chat_role_id(self) -> str:
        return self.role_id(CHAT_SERVICE)

    def chat_variables(self) -> dict[str, Any]:
        """The chat function's environment variables."""
        variables: dict[str, Any] = self.resources[self.chat_function_id()]["Properties"][
            "Environment"
        ]["Variables"]
        return variables

    def sessions_table_id(self) -> str:
        return self.only_logical_id(
            "AWS::DynamoDB::Table",
            {"KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}]},
        )

    def table_key_id(self, table_id: str) -> str:
        """The logical id of the KMS key a table is encrypted with."""
        key_id: str = self.resources[table_id]["Properties"]["SSESpecification"]["KMSMasterKeyId"][
            "Fn::GetAtt"
        ][0]
        return key_id

    def role_statements(self, role_id: str) -> list[dict[str, Any]]:
        """Every statement of the policies attached to a role, with Action and Resource as lists."""
        statements = []
        for policy in self.template.find_resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                    statements.append(
                        {**statement, **{k: _as_list(statement[k]) for k in ("Action", "Resource")}}
                    )
        return statements

    def staged_asset(self, code: dict[str, Any]) -> Path:
        """The folder the cloud assembly uploads for a Lambda `Code` or layer `Content`."""
        asset_hash = code["S3Key"].removesuffix(".zip")
        manifest_file = self.template_file.with_name(f"{self.config.stack_name}.assets.json")
        manifest = json.loads(manifest_file.read_text())
        return self.template_file.parent / manifest["files"][asset_hash]["source"]["path"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def synthesize(
    stage: str, outdir: Path, *, overrides: dict[str, Any] | None = None
) -> SynthesizedStage:
    context = cdk_json_context()
    if overrides:
        stages = context["stages"]
        context["stages"] = {**stages, stage: {**stages[stage], **overrides}}
    app = build_app(context={**context, "stage": stage}, outdir=str(outdir))
    config = stage_config_from_context(app)
    assembly = app.synth()
    artifact = assembly.get_stack_by_name(config.stack_name)
    template_file = Path(assembly.directory) / artifact.template_file
    template_json: dict[str, Any] = json.loads(template_file.read_text())
    return SynthesizedStage(
        config=config,
        app=app,
        template_file=template_file,
        template_json=template_json,
        template=Template.from_json(template_json),
    )
