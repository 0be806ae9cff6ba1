"""The VPC, the answer cache in it, the domain moved into it, and the security groups that decide
who reaches what: the cache only from the chat function, the index only from the functions that
search or write it."""

from __future__ import annotations

from typing import Any

from tests.infra.synth import CHAT_SERVICE, INGEST_SERVICE, SynthesizedStage


def _of_type(stage: SynthesizedStage, resource_type: str) -> dict[str, Any]:
    return {
        logical_id: resource
        for logical_id, resource in stage.resources.items()
        if resource["Type"] == resource_type
    }


def _group_of(stage: SynthesizedStage, service: str) -> str:
    config = stage.resources[stage.function_id(service)]["Properties"]["VpcConfig"]
    [group] = config["SecurityGroupIds"]
    group_id: str = group["Fn::GetAtt"][0]
    return group_id


def _private_subnets(stage: SynthesizedStage) -> set[str]:
    return {
        logical_id
        for logical_id, subnet in _of_type(stage, "AWS::EC2::Subnet").items()
        if not subnet["Properties"].get("MapPublicIpOnLaunch", False)
    }


def _ingress(stage: SynthesizedStage, group_id: str) -> list[dict[str, Any]]:
    """Every ingress rule of a security group, inline or its own resource."""
    rules = list(stage.resources[group_id]["Properties"].get("SecurityGroupIngress", []))
    for rule in _of_type(stage, "AWS::EC2::SecurityGroupIngress").values():
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}:
            rules.append(rule["Properties"])
    return rules


def _egress(stage: SynthesizedStage, group_id: str) -> list[dict[str, Any]]:
    rules = list(stage.resources[group_id]["Properties"].get("SecurityGroupEgress", []))
    for rule in _of_type(stage, "AWS::EC2::SecurityGroupEgress").values():
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}:
            rules.append(rule["Properties"])
    return rules


def test_the_vpc_spans_the_stages_azs_with_its_nat_gateways_flow_logs_and_free_endpoints(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    assert len(_private_subnets(each_stage)) == max(2, config.opensearch_availability_zones)
    assert len(_of_type(each_stage, "AWS::EC2::NatGateway")) == config.nat_gateways
    [flow_log] = _of_type(each_stage, "AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "ALL"
    endpoints = _of_type(each_stage, "AWS::EC2::VPCEndpoint").values()
    services = sorted(
        endpoint["Properties"]["ServiceName"]["Fn::Join"][1][-1] for endpoint in endpoints
    )
    assert services == [".dynamodb", ".s3"]
    assert all(endpoint["Properties"]["VpcEndpointType"] == "Gateway" for endpoint in endpoints)


def test_the_answer_cache_is_serverless_valkey_in_the_private_subnets_within_its_limits(
    each_stage: SynthesizedStage,
) -> None:
    [cache] = _of_type(each_stage, "AWS::ElastiCache::ServerlessCache").values()
    properties = cache["Properties"]
    assert (properties["Engine"], properties["MajorEngineVersion"]) == ("valkey", "8")
    assert {subnet["Ref"] for subnet in properties["SubnetIds"]} == _private_subnets(each_stage)
    assert properties["CacheUsageLimits"] == {
        "DataStorage": {"Maximum": each_stage.config.cache_max_data_gb, "Unit": "GB"},
        "ECPUPerSecond": {"Maximum": each_stage.config.cache_max_ecpu_per_second},
    }
    # Users with passwords only: the group holds the chat user and no `default` user.
    [group] = _of_type(each_stage, "AWS::ElastiCache::UserGroup").values()
    [user] = _of_type(each_stage, "AWS::ElastiCache::User").values()
    assert properties["UserGroupId"] == group["Properties"]["UserGroupId"]
    assert group["Properties"]["UserIds"] == [user["Properties"]["UserId"]]
    assert user["Properties"]["Engine"] == "valkey"
    assert user["Properties"]["UserName"] != "default"


def test_the_cache_user_may_get_and_set_answers_only_with_a_password_from_its_secret(
    each_stage: SynthesizedStage,
) -> None:
    [user] = _of_type(each_stage, "AWS::ElastiCache::User").values()
    access = user["Properties"]["AccessString"].split()
    assert access[0] == "on"
    assert "-@all" in access
    assert [rule for rule in access if rule.startswith("~")] == ["~kefu:answer:*"]
    assert {rule for rule in access if rule.startswith("+")} == {"+get", "+set", "+ping"}
    [secret_id] = _of_type(each_stage, "AWS::SecretsManager::Secret")
    authentication = user["Properties"]["AuthenticationMode"]
    assert authentication["Type"] == "password"
    [password] = authentication["Passwords"]
    # A dynamic reference: the password is never in the template.
    assert password == {
        "Fn::Join": [
            "",
            ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:password::}}"],
        ]
    }
    secret = each_stage.resources[secret_id]["Properties"]["GenerateSecretString"]
    assert secret["GenerateStringKey"] == "password"
    assert secret["PasswordLength"] >= 16


def test_only_the_chat_function_reaches_the_cache_and_it_knows_where_and_as_whom(
    each_stage: SynthesizedStage,
) -> None:
    [cache_id] = _of_type(each_stage, "AWS::ElastiCache::ServerlessCache")
    cache = each_stage.resources[cache_id]["Properties"]
    [cache_group] = cache["SecurityGroupIds"]
    cache_group_id = cache_group["Fn::GetAtt"][0]
    chat_group_id = _group_of(each_stage, CHAT_SERVICE)

    [rule] = _ingress(each_stage, cache_group_id)
    assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": [chat_group_id, "GroupId"]}
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 6379, 6379)
    # The cache itself opens no connection anywhere.
    assert all(
        rule.get("CidrIp") == "255.255.255.255/32" for rule in _egress(each_stage, cache_group_id)
    )

    # The chat function: out on HTTPS, and to the cache's group on its port, nothing else.
    egress = {
        (
            rule.get("CidrIp") or rule["DestinationSecurityGroupId"]["Fn::GetAtt"][0],
            rule["FromPort"],
            rule["ToPort"],
        )
        for rule in _egress(each_stage, chat_group_id)
    }
    assert egress == {("0.0.0.0/0", 443, 443), (cache_group_id, 6379, 6379)}

    variables = each_stage.chat_variables()
    [secret_id] = _of_type(each_stage, "AWS::SecretsManager::Secret")
    assert variables["KEFU_ANSWER_CACHE"] == "redis"
    assert variables["KEFU_REDIS_SECRET"] == {"Ref": secret_id}
    url = variables["KEFU_REDIS_URL"]["Fn::Join"][1]
    assert url[0] == "rediss://"  # TLS
    assert url[1] == {"Fn::GetAtt": [cache_id, "Endpoint.Address"]}
    readers = [
        statement
        for statement in each_stage.role_statements(each_stage.chat_role_id())
        if {"Ref": secret_id} in statement["Resource"]
    ]
    assert readers
    assert all(
        set(statement["Action"])
        <= {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
        for statement in readers
    )
    # No other function is told where the cache is, or as whom.
    chat_id = each_stage.chat_function_id()
    for logical_id, function in _of_type(each_stage, "AWS::Lambda::Function").items():
        if logical_id != chat_id:
            variables = function["Properties"].get("Environment", {}).get("Variables", {})
            assert "KEFU_REDIS_SECRET" not in variables, logical_id


def test_the_domain_is_in_the_vpc_reached_on_https_only_by_the_functions_that_use_it(
    each_stage: SynthesizedStage,
) -> None:
    [domain] = _of_type(each_stage, "AWS::OpenSearchService::Domain").values()
    options = domain["Properties"]["VPCOptions"]
    subnets = {subnet["Ref"] for subnet in options["SubnetIds"]}
    assert len(subnets) == each_stage.config.opensearch_availability_zones
    assert subnets <= _private_subnets(each_stage)
    [search_group] = options["SecurityGroupIds"]
    search_group_id = search_group["Fn::GetAtt"][0]

    sources = {
        (rule["SourceSecurityGroupId"]["Fn::GetAtt"][0], rule["FromPort"], rule["ToPort"])
        for rule in _ingress(each_stage, search_group_id)
    }
    assert sources == {
        (_group_of(each_stage, CHAT_SERVICE), 443, 443),
        (_group_of(each_stage, INGEST_SERVICE), 443, 443),
    }


def test_a_stage_with_its_account_and_region_may_name_its_azs(tmp_path_factory: Any) -> None:
    """It synthesizes (cdk-nag passes with the ARNs spelled out) on the AZs it names."""
    from tests.infra.synth import synthesize

    stage = synthesize(
        "dev",
        tmp_path_factory.mktemp("cdk-named-zones"),
        overrides={
            "account": "123456789012",
            "region": "us-east-1",
            "availability_zones": ["us-east-1b", "us-east-1d"],
        },
    )
    zones = sorted(
        subnet["Properties"]["AvailabilityZone"]
        for subnet in _of_type(stage, "AWS::EC2::Subnet").values()
    )
    assert zones == ["us-east-1b", "us-east-1b", "us-east-1d", "us-east-1d"]
