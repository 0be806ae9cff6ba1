"""The customer-facing chat API: API Gateway REST API in front of the chat Lambda."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra_cdk.constructs.bedrock_access import (
    CHAT_MODEL_ACTIONS,
    EMBEDDING_MODEL_ACTIONS,
    cross_region_model_findings,
    model_invoke_statements,
)
from infra_cdk.constructs.network import Placement
from infra_cdk.constructs.service_function import LogLevel, ServiceFunction

CHAT_SERVICE_NAME = "kefu-chat"
API_VERSION_PATH = "v1"
# What a browser may send on a cross-origin call: JSON bodies, the API key, and an agent's
# SigV4 signature.
CORS_ALLOW_HEADERS = [
    "Content-Type",
    "X-Api-Key",
    "Authorization",
    "X-Amz-Date",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
]
# The helpdesk's routes: authorised by IAM (SigV4), for the enterprise's agents.
AGENT_ROUTES = (
    ("GET", ("tickets",)),
    ("GET", ("tickets", "{ticket_id}")),
    ("POST", ("tickets", "{ticket_id}", "reply")),
    ("POST", ("tickets", "{ticket_id}", "close")),
)

# What writes the answers (kefu's KEFU_MODEL).
ChatModel = Literal["bedrock", "anthropic", "extractive"]


# The alias API Gateway calls.
LIVE_ALIAS = "live"

# What API Gateway answers itself, and how, in the API's error shape. The messages are fixed:
# API Gateway's own (`$context.error.messageString`) is quoted, not escaped, and some (a bad
# signature's canonical request) span lines, which would break the JSON. An unknown route is a
# 403 "missing authentication token" at the gateway, as is an unsigned request to an agent
# route: the code says both.
GATEWAY_ERRORS: tuple[tuple[apigw.ResponseType, str | None, str, str], ...] = (
    (
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "403",
        "no_route_or_unsigned",
        "No route for this method and path, or an agent route's request is not signed.",
    ),
    (apigw.ResponseType.INVALID_API_KEY, "403", "invalid_api_key", "The API key is not valid."),
    (apigw.ResponseType.ACCESS_DENIED, "403", "forbidden", "The caller may not call this route."),
    (
        apigw.ResponseType.INVALID_SIGNATURE,
        "403",
        "invalid_signature",
        "The request's signature does not match.",
    ),
    (apigw.ResponseType.EXPIRED_TOKEN, "403", "expired_token", "The request's token expired."),
    (apigw.ResponseType.THROTTLED, "429", "throttled", "Too many requests; retry shortly."),
    (
        apigw.ResponseType.QUOTA_EXCEEDED,
        "429",
        "quota_exceeded",
        "The API key's quota is used up for this period.",
    ),
    (
        apigw.ResponseType.REQUEST_TOO_LARGE,
        "413",
        "payload_too_large",
        "The request is too large.",
    ),
    (
        apigw.ResponseType.INTEGRATION_TIMEOUT,
        "504",
        "timeout",
        "The answer took too long. The message may have been received: check the "
        "conversation before sending it again.",
    ),
    (apigw.ResponseType.DEFAULT_4_XX, None, "rejected", "API Gateway refused the request."),
    (apigw.ResponseType.DEFAULT_5_XX, None, "gateway_error", "API Gateway could not answer."),
)


def gateway_error_template(code: str, message: str) -> str:
    """The mapping template of a gateway response: a fixed JSON body."""
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))


@dataclass(frozen=True)
class AnthropicApi:
    """Claude through Anthropic's API: the Secrets Manager secret holding the key, and the model
    (None: the one kefu defaults to)."""

    api_key_secret_name: str
    model: str | None = None


@dataclass(frozen=True)
class OrderApi:
    """The enterprise's order API over HTTPS, and the Secrets Manager secret holding its key."""

    url: str
    api_key_secret_name: str


class ChatApi(Construct):
    """The customers' routes (`POST /v1/chat`, `POST /v1/feedback`,
    `GET /v1/sessions/{session_id}/messages`, `GET /v1/health`, `GET /v1/openapi.json`) and the
    agents' (`/v1/tickets...`), all served by the chat Lambda.

    The function answers with `chat_model` (Claude on Bedrock, Claude through Anthropic's API, or
    quotes of the knowledge base), may look orders up in the enterprise's order API, and keeps
    conversations in the sessions table (granted by the stack). It may read the secrets holding
    the API keys it is given and invoke the Bedrock models it uses, nothing more.

    Customers present an API key (usage plan with throttling); agents sign their calls (IAM
    authorization), allowed by the managed policy `agent_policy` that the enterprise attaches to
    its agents' role or group. The stage throttles everyone, logs access as JSON, and traces
    with X-Ray.

    The function runs in the VPC's private subnets (`placement`), where it reaches the index and
    the answer cache.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage_name: str,
        code_dir: Path,
        layer: lambda_.ILayerVersion,
        sessions_table: dynamodb.ITable,
        chat_model: ChatModel,
        bedrock_model_id: str,
        bedrock_embedding_model_id: str,
        anthropic: AnthropicApi | None,
        orders: OrderApi | None,
        memory_tokens: int,
        handover_after_failures: int,
        thresholds: dict[str, float],
        memory_mb: int,
        timeout: Duration,
        log_level: LogLevel,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        throttling_rate_limit: float,
        throttling_burst_limit: int,
        api_key_required: bool,
        cors_allow_origins: Sequence[str],
        create_cloudwatch_role: bool,
        placement: Placement,
        snap_start: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.placement = placement
        if (chat_model == "anthropic") != (anthropic is not None):
            raise ValueError("chat_model 'anthropic' and the Anthropic API go together")

        chat = ServiceFunction(
            self,
            "ChatFunction",
            service_name=CHAT_SERVICE_NAME,
            description="Kefu chat: answers customers from the knowledge base",
            code_dir=code_dir,
            handler="handler.lambda_handler",
            layers=[layer],
            environment={
                "KEFU_MODEL": chat_model,
                "KEFU_EMBEDDER": "bedrock",
                "KEFU_SESSIONS": "dynamodb",
                "KEFU_SESSIONS_TABLE": sessions_table.table_name,
                "KEFU_MEMORY_TOKENS": str(memory_tokens),
                "KEFU_HANDOVER_AFTER_FAILURES": str(handover_after_failures),
                # API Gateway authorises the agent routes (IAM): the function trusts the caller.
                "KEFU_AGENT_AUTH": "iam",
                "KEFU_BEDROCK_EMBEDDING_MODEL_ID": bedrock_embedding_model_id,
                **_answer_model_environment(chat_model, bedrock_model_id, anthropic),
                **_order_api_environment(orders),
                # With a proxy integration the function writes the CORS headers itself.
                "KEFU_CORS_ALLOW_ORIGINS": json.dumps(list(cors_allow_origins)),
                **{f"KEFU_{name.upper()}": str(value) for name, value in thresholds.items()},
            },
            memory_mb=memory_mb,
            timeout=timeout,
            log_level=log_level,
            log_retention=log_retention,
            removal_policy=removal_policy,
            placement=placement,
            snap_start=snap_start,
        )
        self.function = chat.function
        # API Gateway invokes a published version through this alias, never $LATEST: a version
        # is what SnapStart snapshots, and what a release moves the alias between.
        self.alias = lambda_.Alias(
            self,
            "LiveAlias",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            description="The chat function version that API Gateway invokes",
        )
        self.api_key: apigw.IApiKey | None = None
        self._allow_bedrock(
            chat,
            # Only a stage answering with Claude on Bedrock may invoke its chat model.
            model_id=bedrock_model_id if chat_model == "bedrock" else None,
            embedding_model_id=bedrock_embedding_model_id,
        )
        if anthropic is not None:
            self._allow_secret_read(
                chat, "AnthropicApiKey", secret_name=anthropic.api_key_secret_name
            )
        if orders is not None:
            self._allow_secret_read(chat, "OrderApiKey", secret_name=orders.api_key_secret_name)

        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"kefu-{stage_name}",
            description="Kefu customer-service chat API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            cloud_watch_role=create_cloudwatch_role,
            # The account-wide role serves every API in the region: never delete it with us.
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=stage_name,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                # Execution logs for errors only, and never request or response bodies: they hold
                # what customers typed.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=throttling_rate_limit,
                throttling_burst_limit=throttling_burst_limit,
            ),
        )

        integration = apigw.LambdaIntegration(self.alias)
        version = self.api.root.add_resource(
            API_VERSION_PATH,
            # No origins: no preflight either, so no browser page of another site gets through.
            default_cors_preflight_options=(
                apigw.CorsOptions(
                    allow_origins=list(cors_allow_origins),
                    allow_methods=["GET", "POST", "OPTIONS"],
                    allow_headers=CORS_ALLOW_HEADERS,
                    max_age=Duration.hours(1),
                )
                if cors_allow_origins
                else None
            ),
        )
        customer_methods = [
            version.add_resource("chat").add_method(
                "POST", integration, api_key_required=api_key_required
            ),
            version.add_resource("feedback").add_method(
                "POST", integration, api_key_required=api_key_required
            ),
            version.add_resource("sessions")
            .add_resource("{session_id}")
            .add_resource("messages")
            .add_method("GET", integration, api_key_required=api_key_required),
            version.add_resource("health").add_method("GET", integration),
            version.add_resource("openapi.json").add_method("GET", integration),
        ]
        agent_methods = [
            version.resource_for_path("/".join(path)).add_method(
                http_method, integration, authorization_type=apigw.AuthorizationType.IAM
            )
            for http_method, path in AGENT_ROUTES
        ]
        self._add_gateway_responses(cors_allow_origins)

        if api_key_required:
            self._add_api_key(
                stage_name=stage_name,
                rate_limit=throttling_rate_limit,
                burst_limit=throttling_burst_limit,
            )

        self.agent_policy = iam.ManagedPolicy(
            self,
            "AgentPolicy",
            description=f"Lets Kefu's helpdesk agents ({stage_name}) list, read, answer and close "
            "hand-over tickets; attach it to the agents' role or group",
            statements=[
                iam.PolicyStatement(
                    actions=["execute-api:Invoke"],
                    resources=[method.method_arn for method in agent_methods],
                )
            ],
        )

        # The stack publishes the URL under a stable output name; drop the L2's hashed duplicate.
        self.api.node.try_remove_child("Endpoint")
        self._acknowledge_public_api(customer_methods)
        self._acknowledge_agent_api(agent_methods)

    def _allow_bedrock(
        self, chat: ServiceFunction, *, model_id: str | None, embedding_model_id: str
    ) -> None:
        chat_models = [] if model_id is None else [(model_id, CHAT_MODEL_ACTIONS)]
        models = [*chat_models, (embedding_model_id, EMBEDDING_MODEL_ACTIONS)]
        statements = [
            statement
            for model, actions in models
            for statement in model_invoke_statements(self, model_id=model, actions=actions)
        ]
        findings = {
            finding
            for model, _ in models
            for finding in cross_region_model_findings(self, model_id=model)
        }
        for statement in statements:
            chat.role.add_to_principal_policy(statement)
        for finding in findings:
            Validations.of(chat.role).acknowledge(
                Acknowledgment(
                    id=finding,
                    reason="A cross-region inference profile routes to its foundation model in "
                    "several regions; the statement only allows calls made through that one "
                    "profile (bedrock:InferenceProfileArn condition).",
                )
            )

    def _allow_secret_read(
        self, chat: ServiceFunction, construct_id: str, *, secret_name: str
    ) -> None:
        # Imported by name: the secret is the enterprise's, created and rotated outside the stack.
        secret = secretsmanager.Secret.from_secret_name_v2(self, construct_id, secret_name)
        secret.grant_read(chat.role)

    def _add_gateway_responses(self, cors_allow_origins: Sequence[str]) -> None:
        """Errors API Gateway answers itself, before the function (an unknown route, a missing
        API key, throttling, a timeout), in the API's error shape. With exactly one allowed
        origin they carry its CORS headers, or a browser hides them from the page (a gateway
        response names one static origin)."""
        headers: dict[str, str] = {}
        if len(cors_allow_origins) == 1:
            headers = {
                "Access-Control-Allow-Origin": f"'{cors_allow_origins[0]}'",
                "Access-Control-Allow-Headers": "'" + ",".join(CORS_ALLOW_HEADERS) + "'",
            }
        for response_type, status, code, message in GATEWAY_ERRORS:
            # Throttling only: a timed-out chat turn may have been answered and stored, and
            # sending the message again would store it twice.
            retry = {"Retry-After": "'1'"} if status == "429" else {}
            self.api.add_gateway_response(
                f"GatewayResponse{response_type.response_type}",
                type=response_type,
                status_code=status,
                response_headers={**headers, **retry} or None,
                templates={"application/json": gateway_error_template(code, message)},
            )

    def _add_api_key(self, *, stage_name: str, rate_limit: float, burst_limit: int) -> None:
        plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"kefu-{stage_name}",
            description="Kefu chat clients",
            throttle=apigw.ThrottleSettings(rate_limit=rate_limit, burst_limit=burst_limit),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.api_key = self.api.add_api_key(
            "ApiKey", description=f"Kefu chat client key ({stage_name})"
        )
        plan.add_api_key(self.api_key)

    def _acknowledge_agent_api(self, methods: Sequence[apigw.Method]) -> None:
        for method in methods:
            Validations.of(method).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-COG4",
                    reason="Agents are the enterprise's IAM principals, not Cognito users: the "
                    "agent routes take SigV4-signed calls allowed by the agent policy.",
                )
            )
        # Path parameters are '*' in a method's ARN: the agent may act on any ticket.
        stack = Stack.of(self)
        cfn_api = self.api.node.default_child
        cfn_stage = self.api.deployment_stage.node.default_child
        assert isinstance(cfn_api, apigw.CfnRestApi)
        assert isinstance(cfn_stage, apigw.CfnStage)
        api, stage = stack.get_logical_id(cfn_api), stack.get_logical_id(cfn_stage)
        # As cdk-nag writes the ARN: a stage that names its account and region has them (and
        # the partition) spelled out, an environment-agnostic one has the pseudo parameters.
        partition, region, account = (
            f"<{pseudo}>" if Token.is_unresolved(value) else value
            for value, pseudo in (
                (stack.partition, "AWS::Partition"),
                (stack.region, "AWS::Region"),
                (stack.account, "AWS::AccountId"),
            )
        )
        for http_method, path in AGENT_ROUTES:
            if not any(part.startswith("{") for part in path):
                continue
            route = "/".join("*" if part.startswith("{") else part for part in path)
            Validations.of(self.agent_policy).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::arn:{partition}:execute-api:"
                    f"{region}:{account}:<{api}>/<{stage}>/{http_method}/"
                    f"{API_VERSION_PATH}/{route}]",
                    reason="The ticket id is a path parameter: an agent may read, answer and "
                    "close any ticket, through this one method of this API's stage only.",
                )
            )

    def _acknowledge_public_api(self, methods: Sequence[apigw.Method]) -> None:
        for method in methods:
            Validations.of(method).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-APIG4",
                    reason="A public customer-service chat: anonymous customers use it from the "
                    "web page, so there is no user to authorize. Chat clients are identified by "
                    "API key and usage plan; health and the OpenAPI document are public. (The "
                    "agents' routes are authorized by IAM.)",
                ),
                Acknowledgment(
                    id="AwsSolutions-COG4",
                    reason="Customers are anonymous visitors, not Cognito users; chat access is "
                    "by API key and usage plan.",
                ),
            )
        Validations.of(self.api).acknowledge(
            Acknowledgment(
                id="AwsSolutions-APIG2",
                reason="Request bodies are validated once, at the edge of the chat Lambda, by the "
                "same pydantic models that define the OpenAPI document and the JSON errors; a "
                "second schema in API Gateway would drift from them.",
            )
        )
        Validations.of(self.api.deployment_stage).acknowledge(
            Acknowledgment(
                id="AwsSolutions-APIG3",
                reason="WAF is not part of this issue yet; the stage and usage plan throttle "
                "every caller in the meantime.",
            )
        )
        cloudwatch_role = self.api.node.try_find_child("CloudWatchRole")
        if cloudwatch_role is not None:
            Validations.of(cloudwatch_role).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
                    reason="The account-level role API Gateway needs for execution logging; AWS's "
                    "managed policy is the documented one for it.",
                )
            )


def _answer_model_environment(
    chat_model: ChatModel, bedrock_model_id: str, anthropic: AnthropicApi | None
) -> dict[str, str]:
    """The variables that name the model writing the answers, for that model only."""
    if chat_model == "bedrock":
        return {"KEFU_BEDROCK_MODEL_ID": bedrock_model_id}
    if anthropic is None:
        return {}
    environment = {"KEFU_ANTHROPIC_API_KEY_SECRET": anthropic.api_key_secret_name}
    if anthropic.model is not None:
        environment["KEFU_ANTHROPIC_MODEL"] = anthropic.model
    return environment


def _order_api_environment(orders: OrderApi | None) -> dict[str, str]:
    """The order API's variables; without one, KEFU_ORDERS stays unset (no order lookups)."""
    if orders is None:
        return {}
    return {
        "KEFU_ORDERS": "https",
        "KEFU_ORDERS_URL": orders.url,
        "KEFU_ORDERS_API_KEY_SECRET": orders.api_key_secret_name,
    }
