"""The one place that decides how a Kefu Lambda function runs.

Every function construct builds its Lambda through `ServiceFunction`, so the runtime, the
architecture, JSON logs, X-Ray tracing, the log group's retention, the Powertools settings and a
least-privilege role are the same everywhere and change in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from aws_cdk import (
    Acknowledgment,
    Annotations,
    AssetHashType,
    BundlingOptions,
    Duration,
    RemovalPolicy,
    Validations,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.assets import CODE_EXCLUDES
from infra_cdk.constructs.network import Placement

# The shared layer is built for exactly this target (layers/build_layer.py): change them together.
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
METRICS_NAMESPACE = "Kefu"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Lambda's own level names differ from Python's for warnings.
_LAMBDA_LOG_LEVELS: dict[str, lambda_.ApplicationLogLevel] = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}


def powertools_environment(*, service_name: str, log_level: LogLevel) -> dict[str, str]:
    """The variables Powertools reads for its Logger, Tracer and Metrics."""
    return {
        "POWERTOOLS_SERVICE_NAME": service_name,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": log_level,
        # Events and responses carry what customers typed: keep them out of logs and traces.
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    }


class ServiceFunction(Construct):
    """A Python 3.12 arm64 Lambda with Kefu's defaults, its own log group and its own role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        service_name: str,
        description: str,
        code_dir: Path,
        handler: str,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        memory_mb: int,
        timeout: Duration,
        log_level: LogLevel,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        bundling: BundlingOptions | None = None,
        placement: Placement | None = None,
        snap_start: bool = False,
    ) -> None:
        """`bundling`, when given, builds the asset from `code_dir` (without Docker: it must bring
        its own local bundler) and the asset is hashed by what it produced. `placement`, when
        given, runs the function in the VPC's private subnets behind its security group.
        `snap_start` initialises each published version once and starts its environments from
        that snapshot; a version replaced by the next deploy is deleted, as each one cached
        bills by the hour."""
        super().__init__(scope, construct_id)
        if not code_dir.is_dir():
            raise FileNotFoundError(
                f"{service_name}: the function code folder {code_dir} is missing"
            )

        self.log_group = logs.LogGroup(
            self, "LogGroup", retention=log_retention, removal_policy=removal_policy
        )
        # An explicit role instead of AWSLambdaBasicExecutionRole: it may write to its own log
        # group only, not create and write any log group in the account.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of the {service_name} function",
        )
        self.log_group.grant_write(self.role)
        if placement is not None:
            # What AWSLambdaVPCAccessExecutionRole grants, written out: Lambda manages the
            # function's network interfaces in the private subnets with the function's role.
            # EC2 scopes none of these by resource for this use.
            self.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )

        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            code=lambda_.Code.from_asset(
                str(code_dir),
                exclude=CODE_EXCLUDES,
                bundling=bundling,
                asset_hash_type=AssetHashType.OUTPUT if bundling else None,
            ),
            handler=handler,
            layers=list(layers),
            environment={
                **powertools_environment(service_name=service_name, log_level=log_level),
                **environment,
            },
            memory_size=memory_mb,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_LAMBDA_LOG_LEVELS[log_level],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            role=self.role,
            vpc=placement.network.vpc if placement else None,
            vpc_subnets=placement.network.private_subnets if placement else None,
            security_groups=[placement.security_group] if placement else None,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY),
        )
        if snap_start:
            # CDK warns that SnapStart needs a published version; the caller publishes one by
            # reading `current_version` (the chat API's alias).
            Annotations.of(self.function).acknowledge_warning(
                "@aws-cdk/aws-lambda:snapStartRequirePublish",
                "the function's current version is published and invoked through an alias",
            )

        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions-L1",
                reason="Pinned to Python 3.12 on purpose: the shared layer's compiled wheels "
                "(pydantic-core) are built for cp312/arm64 by layers/build_layer.py; moving to a "
                "newer runtime is a change to both together.",
            )
        )
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray's PutTraceSegments and PutTelemetryRecords (added by active tracing) "
                "and, for a function in the VPC, the network-interface actions Lambda takes to "
                "place it there support no resource-level permissions; '*' is the only possible "
                "resource.",
            )
        )
