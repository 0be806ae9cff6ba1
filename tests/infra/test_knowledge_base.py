"""The knowledge base: bucket, ingest queue and function, idempotency table, OpenSearch domain."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from tests.infra.synth import INGEST_SERVICE, SynthesizedStage

PARTITION = {"Ref": "AWS::Partition"}
REGION = {"Ref": "AWS::Region"}


def arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def under(logical_id: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [arn_of(logical_id), "/*"]]}


def knowledge_bucket_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id(
        "AWS::S3::Bucket", Match.object_like({"VersioningConfiguration": Match.any_value()})
    )


def ingest_queue_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id(
        "AWS::SQS::Queue", Match.object_like({"RedrivePolicy": Match.any_value()})
    )


def dead_letter_queue_id(stage: SynthesizedStage) -> str:
    queue = stage.resources[ingest_queue_id(stage)]["Properties"]
    dlq_id: str = queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return dlq_id


def domain_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id("AWS::OpenSearchService::Domain")


def test_a_failing_file_is_retried_three_times_then_kept_14_days_in_the_dlq(
    each_stage: SynthesizedStage,
) -> None:
    queue = each_stage.resources[ingest_queue_id(each_stage)]["Properties"]
    dlq_id = dead_letter_queue_id(each_stage)

    assert queue["RedrivePolicy"]["maxReceiveCount"] == 3
    assert each_stage.resources[dlq_id]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Six times the function's timeout, so a message is never handled twice at once.
    assert queue["VisibilityTimeout"] >= 6 * each_stage.config.ingest_timeout_seconds


def test_both_queues_are_encrypted_with_a_rotating_key_and_refuse_plain_http(
    each_stage: SynthesizedStage,
) -> None:
    for queue_id in (ingest_queue_id(each_stage), dead_letter_queue_id(each_stage)):
        key_id = each_stage.resources[queue_id]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
        assert each_stage.resources[key_id]["Properties"]["EnableKeyRotation"] is True
        each_stage.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": queue_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_uploads_and_deletions_in_the_bucket_reach_the_ingest_queue(
    each_stage: SynthesizedStage,
) -> None:
    queue_arn = arn_of(ingest_queue_id(each_stage))

    each_stage.template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": {"Ref": knowledge_bucket_id(each_stage)},
            "NotificationConfiguration": {
                "QueueConfigurations": Match.array_with(
                    [
                        {"Events": ["s3:ObjectCreated:*"], "QueueArn": queue_arn},
                        {"Events": ["s3:ObjectRemoved:*"], "QueueArn": queue_arn},
                    ]
                )
            },
        },
    )


def test_the_bucket_is_private_versioned_kms_encrypted_https_only_and_logged(
    each_stage: SynthesizedStage,
) -> None:
    bucket_id = knowledge_bucket_id(each_stage)
    bucket = each_stage.resources[bucket_id]["Properties"]
    encryption = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]

    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert "KMSMasterKeyID" in encryption["ServerSideEncryptionByDefault"]
    assert bucket["LoggingConfiguration"]["DestinationBucketName"]["Ref"] in each_stage.resources
    each_stage.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_the_ingest_function_consumes_the_queue_reporting_failures_record_by_record(
    each_stage: SynthesizedStage,
) -> None:
    each_stage.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": arn_of(ingest_queue_id(each_stage)),
            "FunctionName": {"Ref": each_stage.function_id(INGEST_SERVICE)},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": Match.any_value(),
        },
    )


def test_the_ingest_function_runs_python_3_12_on_arm64_with_the_shared_layer(
    each_stage: SynthesizedStage,
) -> None:
    config = each_stage.config
    function = each_stage.resources[each_stage.function_id(INGEST_SERVICE)]["Properties"]

    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    assert function["Handler"] == "handler.lambda_handler"
    assert function["Layers"] == [{"Ref": each_stage.only_logical_id("AWS::Lambda::LayerVersion")}]
    assert function["MemorySize"] == config.ingest_memory_mb
    assert function["Timeout"] == config.ingest_timeout_seconds
    assert function["TracingConfig"] == {"Mode": "Active"}


def test_the_ingest_asset_carries_the_handler_kb_ingest_and_arm64_parsers(
    dev: SynthesizedStage,
) -> None:
    function = dev.resources[dev.function_id(INGEST_SERVICE)]["Properties"]
    asset = dev.staged_asset(function["Code"])

    assert (asset / "handler.py").is_file()
    assert (asset / "kb_ingest" / "pipeline.py").is_file()
    assert (asset / "kb_ingest" / "loaders.py").is_file()
    for parser in ("openpyxl", "pypdf", "bs4"):
        assert (asset / parser / "__init__.py").is_file(), parser
    # The sample KB is for the local stack; bytecode of this machine's Python is useless there.
    assert not (asset / "kb_ingest" / "sample_kb").exists()
    assert not list(asset.rglob("__pycache__"))


def test_both_functions_find_the_index_and_the_ingest_function_its_table(
    each_stage: SynthesizedStage,
) -> None:
    url = {
        "Fn::Join": ["", ["https://", {"Fn::GetAtt": [domain_id(each_stage), "DomainEndpoint"]}]]
    }
    table_id = each_stage.only_logical_id(
        "AWS::DynamoDB::Table", {"KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}]}
    )
    index = {
        "KEFU_INDEX": "opensearch",
        "KEFU_OPENSEARCH_URL": url,
        "KEFU_OPENSEARCH_INDEX": "kefu-kb",
        "KEFU_EMBEDDER": "bedrock",
        "KEFU_BEDROCK_EMBEDDING_MODEL_ID": each_stage.config.bedrock_embedding_model_id,
    }

    for function_id in (each_stage.chat_function_id(), each_stage.function_id(INGEST_SERVICE)):
        variables = each_stage.resources[function_id]["Properties"]["Environment"]["Variables"]
        assert {name: variables.get(name) for name in index} == index
    ingest = each_stage.resources[each_stage.function_id(INGEST_SERVICE)]["Properties"]
    assert ingest["Environment"]["Variables"]["KEFU_IDEMPOTENCY_TABLE"] == {"Ref": table_id}


def test_idempotency_records_expire_and_are_encrypted_and_recoverable(
    each_stage: SynthesizedStage,
) -> None:
    each_stage.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
        },
    )


def test_the_domain_encrypts_everywhere_and_takes_only_tls_1_2_https(
    each_stage: SynthesizedStage,
) -> None:
    each_stage.template.has_resource_properties(
        "AWS::OpenSearchService::Domain",
        {
            "EncryptionAtRestOptions": {"Enabled": True},
            "NodeToNodeEncryptionOptions": {"Enabled": True},
            "DomainEndpointOptions": Match.object_like(
                {"EnforceHTTPS": True, "TLSSecurityPolicy": "Policy-Min-TLS-1-2-2019-07"}
            ),
        },
    )


def test_the_domain_is_sized_and_spread_as_the_stage_says(each_stage: SynthesizedStage) -> None:
    config = each_stage.config
    domain = each_stage.resources[domain_id(each_stage)]["Properties"]
    cluster = domain["ClusterConfig"]

    assert cluster["InstanceType"] == config.opensearch_instance_type
    assert cluster["InstanceCount"] == config.opensearch_instance_count
    assert domain["EBSOptions"]["VolumeSize"] == config.opensearch_volume_size_gb
    zones = config.opensearch_availability_zones
    assert cluster["ZoneAwarenessEnabled"] is (zones > 1)
    if zones > 1:
        assert cluster["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": zones}
    assert cluster["DedicatedMasterEnabled"] is (config.opensearch_dedicated_master_count > 0)


def test_only_the_chat_and_ingest_roles_may_call_the_domain(each_stage: SynthesizedStage) -> None:
    policy = each_stage.resources[domain_id(each_stage)]["Properties"]["AccessPolicies"]
    (statement,) = policy["Statement"]

    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "es:ESHttp*"
    assert sorted(p["Fn::GetAtt"][0] for p in statement["Principal"]["AWS"]) == sorted(
        [each_stage.chat_role_id(), each_stage.role_id(INGEST_SERVICE)]
    )
    assert "Condition" not in statement


def test_the_roles_call_the_domain_with_the_methods_they_need_and_on_it_only(
    each_stage: SynthesizedStage,
) -> None:
    domain = domain_id(each_stage)
    on_domain = [arn_of(domain), under(domain)]

    ingest = each_stage.role_statements(each_stage.role_id(INGEST_SERVICE))
    chat = each_stage.role_statements(each_stage.chat_role_id())

    es_ingest = [s for s in ingest if any(a.startswith("es:") for a in s["Action"])]
    es_chat = [s for s in chat if any(a.startswith("es:") for a in s["Action"])]
    assert [(set(s["Action"]), s["Resource"]) for s in es_ingest] == [
        (
            {f"es:ESHttp{m}" for m in ("Delete", "Get", "Head", "Patch", "Post", "Put")},
            on_domain,
        )
    ]
    assert [(set(s["Action"]), s["Resource"]) for s in es_chat] == [
        ({"es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"}, on_domain)
    ]


def test_the_ingest_function_embeds_with_titan_and_reads_only_the_knowledge_bucket(
    each_stage: SynthesizedStage,
) -> None:
    model_id = each_stage.config.bedrock_embedding_model_id
    bucket = knowledge_bucket_id(each_stage)
    statements = each_stage.role_statements(each_stage.role_id(INGEST_SERVICE))

    bedrock = [s for s in statements if any(a.startswith("bedrock:") for a in s["Action"])]
    assert bedrock == [
        {
            "Action": ["bedrock:InvokeModel"],
            "Effect": "Allow",
            "Resource": [
                {
                    "Fn::Join": [
                        "",
                        ["arn:", PARTITION, ":bedrock:", REGION, f"::foundation-model/{model_id}"],
                    ]
                }
            ],
        }
    ]
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in s["Action"])]
    assert sorted((s["Action"][0], str(s["Resource"])) for s in s3_statements) == sorted(
        [("s3:GetObject", str([under(bucket)])), ("s3:ListBucket", str([arn_of(bucket)]))]
    )


def test_a_message_in_the_dead_letter_queue_raises_an_alarm(each_stage: SynthesizedStage) -> None:
    each_stage.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": [dead_letter_queue_id(each_stage), "QueueName"]},
                }
            ],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "EvaluationPeriods": 1,
        },
    )
