"""The chat Lambda: runtime, layer, logs, configuration and its own permissions."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import (
    CHAT_SERVICE,
    ESCALATION_SERVICE,
    EXPORT_SERVICE,
    HEAD_UPGRADE_SERVICE,
    INGEST_SERVICE,
    SynthesizedStage,
)


def test_the_chat_function_runs_python_3_12_on_arm64_with_the_shared_layer(
    each_stage: SynthesizedStage,
) -> None:
    layer_id = each_stage.only_logical_id("AWS::Lambda::LayerVersion")
    config = each_stage.config

    each_stage.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Handler": "handler.lambda_handler",
            "Layers": [{"Ref": layer_id}],
            "MemorySize": config.chat_memory_mb,
            "Timeout": config.chat_timeout_seconds,
            "TracingConfig": {"Mode": "Active"},
        },
    )
    each_stage.template.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"CompatibleRuntimes": ["python3.12"], "CompatibleArchitectures": ["arm64"]},
    )


def test_the_chat_function_logs_json_to_its_own_log_group_kept_as_the_stage_says(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    function = each_stage.resources[each_stage.chat_function_id()]["Properties"]
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]

    assert function["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": {"WARNING": "WARN"}.get(config.log_level, config.log_level),
        "SystemLogLevel": "WARN",
        "LogGroup": {"Ref": log_group_id},
    }
    log_group = each_stage.resources[log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == config.log_retention_days
    assert log_group["DeletionPolicy"] == ("Retain" if config.retain_data else "Delete")


def test_the_chat_function_is_configured_from_the_stage(each_stage: SynthesizedStage) -> None:
    config = each_stage.config
    table_id = each_stage.sessions_table_id()

    each_stage.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": {
                    "KEFU_MODEL": config.chat_model,
                    "KEFU_EMBEDDER": "bedrock",
                    "KEFU_INDEX": "opensearch",
                    "KEFU_SESSIONS": "dynamodb",
                    "KEFU_SESSIONS_TABLE": {"Ref": table_id},
                    "KEFU_MEMORY_TOKENS": str(config.memory_tokens),
                    "KEFU_BEDROCK_MODEL_ID": config.bedrock_model_id,
                    "KEFU_BEDROCK_EMBEDDING_MODEL_ID": config.bedrock_embedding_model_id,
                    "KEFU_CORS_ALLOW_ORIGINS": json.dumps(list(config.cors_allow_origins)),
                    "POWERTOOLS_SERVICE_NAME": CHAT_SERVICE,
                    "POWERTOOLS_METRICS_NAMESPACE": "Kefu",
                    "POWERTOOLS_LOG_LEVEL": config.log_level,
                    # What customers type stays out of logs and traces.
                    "POWERTOOLS_LOGGER_LOG_EVENT": "false",
                    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
                }
            }
        },
    )


def _build_layer() -> Any:
    from tests.infra.test_cdk_layer_build import build_layer

    return build_layer


def test_the_layer_ships_kefu_and_arm64_wheels_with_bytecode_for_lambdas_python_only(
    dev: SynthesizedStage,
) -> None:
    layer = dev.resources[dev.only_logical_id("AWS::Lambda::LayerVersion")]
    site = dev.staged_asset(layer["Properties"]["Content"]) / "python"

    assert (site / "kefu" / "__init__.py").is_file()
    assert (site / "aws_lambda_powertools").is_dir()
    compiled = [path.name for path in site.glob("pydantic_core/*.so")]
    assert compiled, "pydantic-core's compiled module is missing from the layer"
    assert all("cpython-312-aarch64-linux-gnu" in name for name in compiled), compiled
    # Bytecode only for Lambda's Python 3.12 (layers/build_layer.py), none for the build's own.
    bytecode = [path.name for path in site.rglob("*.pyc")]
    assert all(".cpython-312." in name for name in bytecode), {
        name for name in bytecode if ".cpython-312." not in name
    }
    # Where the build found a Python 3.12 (as `make test` does here, under pyenv), it is there.
    if _build_layer().target_python() is not None:
        assert (site / "kefu" / "__pycache__" / "chat.cpython-312.pyc").is_file()


def test_the_chat_function_role_writes_only_its_own_log_group(
    each_stage: SynthesizedStage,
) -> None:
    function = each_stage.resources[each_stage.chat_function_id()]["Properties"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]

    # No AWSLambdaBasicExecutionRole: it may create and write any log group in the account.
    assert "ManagedPolicyArns" not in each_stage.resources[role_id]["Properties"]
    each_stage.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": role_id}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Effect": "Allow",
                            "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
                        }
                    ]
                )
            },
        },
    )


# What Lambda needs to place a function in the VPC (AWSLambdaVPCAccessExecutionRole's actions).
VPC_ACCESS_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
# Functions whose roles may take the VPC actions: those placed in the VPC, and CDK's custom
# resource that strips the VPC's default security group.
IN_VPC = (CHAT_SERVICE, INGEST_SERVICE, HEAD_UPGRADE_SERVICE)


def test_nothing_but_x_ray_and_vpc_placement_is_granted_on_every_resource(
    each_stage: SynthesizedStage,
) -> None:
    # X-Ray and the network-interface actions have no resource-level permissions; anything
    # else on "*" would be a real wildcard.
    placed_roles = {each_stage.role_id(service) for service in IN_VPC}
    for policy in each_stage.template.find_resources("AWS::IAM::Policy").values():
        roles = {role["Ref"] for role in policy["Properties"]["Roles"]}
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in (resources := statement["Resource"]) or resources == "*":
                actions = statement["Action"]
                actions = {actions} if isinstance(actions, str) else set(actions)
                if actions & VPC_ACCESS_ACTIONS:
                    assert roles <= placed_roles, statement
                others = actions - VPC_ACCESS_ACTIONS
                assert all(action.startswith("xray:") for action in others), statement


def test_the_functions_that_reach_the_index_or_the_cache_run_in_the_private_subnets(
    each_stage: SynthesizedStage,
) -> None:
    resources = each_stage.resources
    private_subnets = {
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::EC2::Subnet"
        and not resource["Properties"].get("MapPublicIpOnLaunch", False)
    }
    assert len(private_subnets) == max(2, each_stage.config.opensearch_availability_zones)
    for service in IN_VPC:
        function = resources[each_stage.function_id(service)]["Properties"]
        subnets = {subnet["Ref"] for subnet in function["VpcConfig"]["SubnetIds"]}
        assert subnets == private_subnets, service
    for service in (ESCALATION_SERVICE, EXPORT_SERVICE):
        assert "VpcConfig" not in resources[each_stage.function_id(service)]["Properties"]


def test_calibrated_thresholds_reach_the_chat_function_only_when_the_stage_sets_them(
    dev: SynthesizedStage, keyless: SynthesizedStage
) -> None:
    assert "KEFU_FAQ_THRESHOLD" not in dev.chat_variables()
    configured = keyless.chat_variables()
    assert configured["KEFU_FAQ_THRESHOLD"] == "0.62"
    assert configured["KEFU_HEAD_THRESHOLD"] == "0.3"
    assert configured["KEFU_PASSAGE_THRESHOLD"] == "0.58"
    assert configured["KEFU_SIMILARITY_THRESHOLD"] == "0.7"
    assert "KEFU_SIMILARITY_THRESHOLD" not in dev.chat_variables()


def assert_every_kefu_variable_is_read(stage: SynthesizedStage) -> None:
    from kefu.settings import Settings

    # The ingest function reads its idempotency table itself (functions/ingest/handler.py).
    read = {f"KEFU_{name.upper()}" for name in Settings.model_fields} | {"KEFU_IDEMPOTENCY_TABLE"}
    given = {
        name
        for resource in stage.resources.values()
        if resource["Type"] == "AWS::Lambda::Function"
        for name in resource["Properties"].get("Environment", {}).get("Variables", {})
        if name.startswith("KEFU_")
    }

    assert given, "no function is configured through KEFU_* variables"
    assert given <= read, f"set but never read: {sorted(given - read)}"


def test_every_kefu_variable_a_function_is_given_is_a_setting_it_reads(
    each_stage: SynthesizedStage,
) -> None:
    assert_every_kefu_variable_is_read(each_stage)


def test_the_anthropic_and_order_api_variables_are_settings_the_chat_function_reads(
    anthropic_with_orders: SynthesizedStage,
) -> None:
    assert_every_kefu_variable_is_read(anthropic_with_orders)


def test_the_environment_the_benchmarks_start_the_chat_in_is_the_deployed_one(
    dev: SynthesizedStage,
) -> None:
    from tests.lambda_env import CALIBRATION, DEPLOYED_CHAT, LAMBDA

    deployed = set(dev.chat_variables())
    mirrored = set(DEPLOYED_CHAT) - set(LAMBDA) - set(CALIBRATION)
    assert mirrored == deployed - {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_LOG_LEVEL",
    }
