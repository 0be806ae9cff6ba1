"""The REST API customers reach: routes, API key, throttling, logging and CORS."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match

from tests.infra.synth import SynthesizedStage, synthesize

ROUTES = [("POST", "/v1/chat"), ("GET", "/v1/health"), ("GET", "/v1/openapi.json")]


def api_resource_id(stage: SynthesizedStage, path: str) -> str:
    """The logical id of the API resource at `path`, walked from the API's root."""
    api_id = stage.only_logical_id("AWS::ApiGateway::RestApi")
    parent: dict[str, Any] = {"Fn::GetAtt": [api_id, "RootResourceId"]}
    for part in path.strip("/").split("/"):
        parent = {
            "Ref": stage.only_logical_id(
                "AWS::ApiGateway::Resource", {"ParentId": parent, "PathPart": part}
            )
        }
    resource_id: str = parent["Ref"]
    return resource_id


def method(stage: SynthesizedStage, http_method: str, path: str) -> dict[str, Any]:
    method_id = stage.only_logical_id(
        "AWS::ApiGateway::Method",
        {"HttpMethod": http_method, "ResourceId": {"Ref": api_resource_id(stage, path)}},
    )
    properties: dict[str, Any] = stage.resources[method_id]["Properties"]
    return properties


@pytest.mark.parametrize(("http_method", "path"), ROUTES)
def test_each_route_is_proxied_to_the_chat_functions_live_alias(
    each_stage: SynthesizedStage, http_method: str, path: str
) -> None:
    alias_id = each_stage.chat_alias_id()

    integration = method(each_stage, http_method, path)["Integration"]

    assert integration["Type"] == "AWS_PROXY"
    assert integration["IntegrationHttpMethod"] == "POST"
    # A published version, through the alias; never $LATEST.
    assert {"Ref": alias_id} in integration["Uri"]["Fn::Join"][1]
    assert {"Fn::GetAtt": [each_stage.chat_function_id(), "Arn"]} not in integration["Uri"][
        "Fn::Join"
    ][1]
    # API Gateway may invoke the alias for exactly this route.
    each_stage.template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "Principal": "apigateway.amazonaws.com",
            "FunctionName": {"Ref": alias_id},
            "SourceArn": {
                "Fn::Join": [
                    "",
                    Match.array_with([Match.string_like_regexp(f"/{http_method}{path}$")]),
                ]
            },
        },
    )


def test_the_live_alias_points_at_the_current_version_which_a_deploy_replaces(
    each_stage: SynthesizedStage,
) -> None:
    alias = each_stage.resources[each_stage.chat_alias_id()]["Properties"]
    version_id = alias["FunctionVersion"]["Fn::GetAtt"][0]
    version = each_stage.resources[version_id]

    assert alias["Name"] == "live"
    assert version["Type"] == "AWS::Lambda::Version"
    assert version["Properties"]["FunctionName"] == {"Ref": each_stage.chat_function_id()}
    # The version the next deploy replaces is deleted: a SnapStart version bills while cached.
    assert version["DeletionPolicy"] == "Delete"


def test_the_chat_function_starts_from_a_snapshot_where_the_stage_asks(
    each_stage: SynthesizedStage,
) -> None:
    properties = each_stage.resources[each_stage.chat_function_id()]["Properties"]

    assert each_stage.config.chat_snap_start, "every stage in cdk.json uses SnapStart"
    assert properties["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    # SnapStart's limits: no EFS, at most 512 MB of /tmp.
    assert "FileSystemConfigs" not in properties
    assert properties.get("EphemeralStorage", {"Size": 512})["Size"] <= 512


def test_a_stage_may_leave_snapstart_off_and_still_invokes_the_alias(
    keyless: SynthesizedStage,
) -> None:
    properties = keyless.resources[keyless.chat_function_id()]["Properties"]

    assert "SnapStart" not in properties
    integration = method(keyless, "POST", "/v1/chat")["Integration"]
    assert {"Ref": keyless.chat_alias_id()} in integration["Uri"]["Fn::Join"][1]


def test_chat_needs_an_api_key_while_health_and_openapi_are_public(
    each_stage: SynthesizedStage,
) -> None:
    assert each_stage.config.api_key_required, "every stage in cdk.json protects /v1/chat"

    assert method(each_stage, "POST", "/v1/chat")["ApiKeyRequired"] is True
    assert method(each_stage, "GET", "/v1/health").get("ApiKeyRequired", False) is False
    assert method(each_stage, "GET", "/v1/openapi.json").get("ApiKeyRequired", False) is False


def test_api_keys_belong_to_a_usage_plan_throttled_like_the_stage(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    api_id = each_stage.only_logical_id("AWS::ApiGateway::RestApi")
    stage_id = each_stage.only_logical_id("AWS::ApiGateway::Stage")
    plan_id = each_stage.only_logical_id(
        "AWS::ApiGateway::UsagePlan",
        {
            "ApiStages": [{"ApiId": {"Ref": api_id}, "Stage": {"Ref": stage_id}}],
            "Throttle": {
                "RateLimit": config.api_throttling_rate_limit,
                "BurstLimit": config.api_throttling_burst_limit,
            },
        },
    )
    key_id = each_stage.only_logical_id("AWS::ApiGateway::ApiKey", {"Enabled": True})

    each_stage.template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey",
        {"KeyId": {"Ref": key_id}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": plan_id}},
    )
    each_stage.template.has_output("ApiKeyId", {"Value": {"Ref": key_id}})


def test_the_stage_throttles_traces_and_logs_access_but_never_bodies(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    stage = each_stage.resources[each_stage.only_logical_id("AWS::ApiGateway::Stage")]
    properties = stage["Properties"]

    assert properties["StageName"] == config.name
    assert properties["TracingEnabled"] is True
    assert properties["MethodSettings"] == [
        {
            "HttpMethod": "*",
            "ResourcePath": "/*",
            "LoggingLevel": "ERROR",
            "DataTraceEnabled": False,
            "MetricsEnabled": True,
            "ThrottlingRateLimit": config.api_throttling_rate_limit,
            "ThrottlingBurstLimit": config.api_throttling_burst_limit,
        }
    ]
    access_log = properties["AccessLogSetting"]
    assert '"status":"$context.status"' in access_log["Format"]
    [access_log_group] = [
        part["Ref"]
        for part in access_log["DestinationArn"]["Fn::Join"][1]
        if isinstance(part, dict) and part.get("Ref") in each_stage.resources
    ]
    assert each_stage.resources[access_log_group]["Type"] == "AWS::Logs::LogGroup"
    assert (
        each_stage.resources[access_log_group]["Properties"]["RetentionInDays"]
        == config.log_retention_days
    )


def test_browsers_may_call_the_api_from_the_allowed_origins(each_stage: SynthesizedStage) -> None:
    origins = each_stage.config.cors_allow_origins
    preflight = method(each_stage, "OPTIONS", "/v1/chat")
    headers = preflight["Integration"]["IntegrationResponses"][0]["ResponseParameters"]

    assert headers["method.response.header.Access-Control-Allow-Origin"] == f"'{origins[0]}'"
    assert "X-Api-Key" in headers["method.response.header.Access-Control-Allow-Headers"]
    assert "POST" in headers["method.response.header.Access-Control-Allow-Methods"]
    # API Gateway's own errors (a missing key, throttling) must be readable by the page too.
    if len(origins) == 1:
        for response_type in ("DEFAULT_4XX", "DEFAULT_5XX"):
            each_stage.template.has_resource_properties(
                "AWS::ApiGateway::GatewayResponse",
                {
                    "ResponseType": response_type,
                    "ResponseParameters": Match.object_like(
                        {"gatewayresponse.header.Access-Control-Allow-Origin": f"'{origins[0]}'"}
                    ),
                },
            )


def gateway_cors_headers(stage: SynthesizedStage) -> list[str]:
    """The CORS headers any of API Gateway's own error responses carries."""
    return [
        name
        for response in stage.template.find_resources("AWS::ApiGateway::GatewayResponse").values()
        for name in response["Properties"].get("ResponseParameters", {})
        if "Access-Control" in name
    ]


def test_api_gateways_own_errors_come_in_the_apis_error_shape(
    each_stage: SynthesizedStage,
) -> None:
    responses = {
        response["Properties"]["ResponseType"]: response["Properties"]
        for response in each_stage.template.find_resources(
            "AWS::ApiGateway::GatewayResponse"
        ).values()
    }

    # An unknown route, a missing or wrong key, throttling, a timeout, and every other
    # 4xx and 5xx API Gateway answers before the function
    assert {
        "MISSING_AUTHENTICATION_TOKEN",
        "INVALID_API_KEY",
        "THROTTLED",
        "QUOTA_EXCEEDED",
        "REQUEST_TOO_LARGE",
        "INTEGRATION_TIMEOUT",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    } <= responses.keys()
    for response_type, response in responses.items():
        # A fixed body: API Gateway sends the template as it is (no variables in it)
        template = response["ResponseTemplates"]["application/json"]
        assert "$" not in template, response_type
        document = json.loads(template)
        assert set(document) == {"error"}, response_type
        assert set(document["error"]) == {"code", "message"}, response_type
        assert re.fullmatch(r"[a-z_]+", document["error"]["code"]), response_type
    assert responses["THROTTLED"]["StatusCode"] == "429"
    assert responses["THROTTLED"]["ResponseParameters"]["gatewayresponse.header.Retry-After"]
    assert responses["REQUEST_TOO_LARGE"]["StatusCode"] == "413"
    # A timed-out turn may have been stored: no client is told to send it again.
    assert "gatewayresponse.header.Retry-After" not in responses["INTEGRATION_TIMEOUT"].get(
        "ResponseParameters", {}
    )


def test_the_api_url_is_an_output_with_a_stable_name(each_stage: SynthesizedStage) -> None:
    api_id = each_stage.only_logical_id("AWS::ApiGateway::RestApi")
    stage_id = each_stage.only_logical_id("AWS::ApiGateway::Stage")

    each_stage.template.has_output(
        "ApiUrl",
        {
            "Value": {
                "Fn::Join": [
                    "",
                    Match.array_with([{"Ref": api_id}, ".execute-api.", {"Ref": stage_id}, "/"]),
                ]
            }
        },
    )


def test_a_stage_without_api_keys_has_no_key_plan_or_key_output(keyless: SynthesizedStage) -> None:
    assert method(keyless, "POST", "/v1/chat").get("ApiKeyRequired", False) is False
    assert keyless.template.find_resources("AWS::ApiGateway::ApiKey") == {}
    assert keyless.template.find_resources("AWS::ApiGateway::UsagePlan") == {}
    assert "ApiKeyId" not in keyless.template_json["Outputs"]


def test_with_several_origins_the_preflight_echoes_the_allowed_one(
    keyless: SynthesizedStage,
) -> None:
    preflight = method(keyless, "OPTIONS", "/v1/chat")
    response = preflight["Integration"]["IntegrationResponses"][0]

    first, *others = keyless.config.cors_allow_origins

    # One static header cannot name two origins: the first is the default, the template switches
    # to the caller's origin when it is one of the others.
    assert response["ResponseParameters"]["method.response.header.Access-Control-Allow-Origin"] == (
        f"'{first}'"
    )
    for origin in others:
        assert f'$origin == "{origin}"' in response["ResponseTemplates"]["application/json"]
    assert not gateway_cors_headers(keyless)


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStage:
    """The dev stage naming no origins, as a stage that leaves `cors_allow_origins` out does."""
    return synthesize(
        "dev", tmp_path_factory.mktemp("cdk-no-origins"), overrides={"cors_allow_origins": []}
    )


def test_a_stage_that_names_no_origins_lets_no_browser_page_call_it(
    closed: SynthesizedStage,
) -> None:
    # No preflight is answered, by API Gateway or by the function
    assert (
        closed.template.find_resources(
            "AWS::ApiGateway::Method", {"Properties": {"HttpMethod": "OPTIONS"}}
        )
        == {}
    )
    assert closed.chat_variables()["KEFU_CORS_ALLOW_ORIGINS"] == "[]"
    # And API Gateway's own errors carry no CORS headers either
    assert not gateway_cors_headers(closed)
    assert method(closed, "POST", "/v1/chat")["Integration"]["Type"] == "AWS_PROXY"
