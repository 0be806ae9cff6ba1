"""The knowledge base: bucket, ingest queue and function, idempotency table, OpenSearch domain."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest
from aws_cdk.assertions import Match
from opensearchpy import Connection

from tests.infra.synth import HEAD_UPGRADE_SERVICE, INGEST_SERVICE, SynthesizedStage

PARTITION = {"Ref": "AWS::Partition"}
REGION = {"Ref": "AWS::Region"}
ACCOUNT = {"Ref": "AWS::AccountId"}
INDEX = "kefu-kb"
# The search pipeline fusing the index's hybrid candidates: only ingestion may write it.
PIPELINE = f"_search/pipeline/{INDEX}-hybrid"


def arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def under(logical_id: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [arn_of(logical_id), "/*"]]}


def knowledge_bucket_id(stage: SynthesizedStage) -> str:
    return stage.only_logical_id(
        "AWS::S3::Bucket",
        Match.object_like(
            {"LoggingConfiguration": Match.object_like({"LogFilePrefix": "knowledge-bucket/"})}
        ),
    )


def ingest_queue_id(stage: SynthesizedStage) -> str:
    """The queue the ingest function consumes (the escalation has a redriven queue too)."""
    mapping = stage.resources[
        stage.only_logical_id(
            "AWS::Lambda::EventSourceMapping",
            Match.object_like({"FunctionName": {"Ref": stage.function_id(INGEST_SERVICE)}}),
        )
    ]
    queue_id: str = mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
    return queue_id


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
    assert (asset / "upgrade.py").is_file()
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
    # The ingest key encrypts the ingest queue and the ingest idempotency table.
    ingest_key = each_stage.resources[ingest_queue_id(each_stage)]["Properties"]["KmsMasterKeyId"]
    table_id = each_stage.only_logical_id(
        "AWS::DynamoDB::Table",
        Match.object_like(
            {
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "SSESpecification": Match.object_like({"KMSMasterKeyId": ingest_key}),
            }
        ),
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


SEARCH_METHODS = {"Get", "Head", "Post"}
READ_METHODS = {"Get", "Head"}
WRITE_METHODS = {"Put", "Delete", "Patch"}
# What the chat role may call, as (HTTP method, path below the domain ARN).
CHAT_GRANTS = {
    *((method, f"{INDEX}/_search") for method in SEARCH_METHODS),
    *((method, f"{INDEX}-meta/_mget") for method in SEARCH_METHODS),
    *((method, f"{INDEX}-meta/_doc/version") for method in READ_METHODS),
}

Grant = tuple[str, str]


def domain_arn_prefix(stage: SynthesizedStage) -> list[Any]:
    """The parts of the domain's ARN that start every resource of its policies."""
    name = stage.resources[domain_id(stage)]["Properties"]["DomainName"]
    return ["arn:", PARTITION, ":es:", REGION, ":", ACCOUNT, f":domain/{name}/"]


def grants(stage: SynthesizedStage, statements: list[dict[str, Any]]) -> set[Grant]:
    """Every (HTTP method, path below the domain) the `es:` statements allow."""
    prefix = domain_arn_prefix(stage)
    allowed: set[Grant] = set()
    for statement in statements:
        actions = [a for a in _as_list(statement["Action"]) if a.startswith("es:")]
        if not actions:
            continue
        assert statement["Effect"] == "Allow"
        assert "Condition" not in statement
        for resource in _as_list(statement["Resource"]):
            separator, parts = resource["Fn::Join"]
            assert separator == ""
            assert parts[:-1] == prefix[:-1]
            assert parts[-1].startswith(prefix[-1]), resource
            path = parts[-1].removeprefix(prefix[-1])
            allowed |= {(action.removeprefix("es:ESHttp"), path) for action in actions}
    return allowed


def domain_policy_statements(stage: SynthesizedStage, role_id: str) -> list[dict[str, Any]]:
    policy = stage.resources[domain_id(stage)]["Properties"]["AccessPolicies"]
    return [s for s in policy["Statement"] if s["Principal"] == {"AWS": arn_of(role_id)}]


def identity_statements(stage: SynthesizedStage, role_id: str) -> list[dict[str, Any]]:
    return [
        s for s in stage.role_statements(role_id) if any(a.startswith("es:") for a in s["Action"])
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_each_statement_of_the_domain_policy_names_one_role_and_exact_paths(
    each_stage: SynthesizedStage,
) -> None:
    policy = each_stage.resources[domain_id(each_stage)]["Properties"]["AccessPolicies"]
    roles = {
        each_stage.chat_role_id(),
        each_stage.role_id(INGEST_SERVICE),
        each_stage.role_id(HEAD_UPGRADE_SERVICE),
    }

    principals = [statement["Principal"]["AWS"] for statement in policy["Statement"]]

    # One role per statement, so one role's rights never extend to the other
    assert all(isinstance(principal, dict) for principal in principals)
    assert {principal["Fn::GetAtt"][0] for principal in principals} == roles
    for statement in policy["Statement"]:
        assert "es:ESHttp*" not in _as_list(statement["Action"])
        assert not any("*" in path for _, path in grants(each_stage, [statement]))


def test_the_chat_role_may_only_search_the_index_and_read_the_kb_version(
    each_stage: SynthesizedStage,
) -> None:
    chat = each_stage.chat_role_id()

    # An allow in either policy lets a request through: both must say the same, and no more.
    for statements in (
        domain_policy_statements(each_stage, chat),
        identity_statements(each_stage, chat),
    ):
        allowed = grants(each_stage, statements)
        assert allowed == CHAT_GRANTS
        assert not {method for method, _ in allowed} & WRITE_METHODS
        assert not any(path.endswith("_bulk") for _, path in allowed)
        assert not any(path.startswith("_search/pipeline") for _, path in allowed)
        # POST to a document path would index it: the version may only be read.
        assert ("Post", f"{INDEX}-meta/_doc/version") not in allowed


def test_the_ingest_role_may_create_and_write_the_index_and_nothing_else(
    each_stage: SynthesizedStage,
) -> None:
    ingest = each_stage.role_id(INGEST_SERVICE)
    writes = {
        ("Head", INDEX),
        ("Put", INDEX),
        ("Head", f"{INDEX}-meta"),
        ("Put", f"{INDEX}-meta"),
        ("Post", f"{INDEX}/_bulk"),
        ("Post", f"{INDEX}-meta/_bulk"),
        ("Post", f"{INDEX}-meta/_update/version"),
        ("Post", f"{INDEX}/_mget"),
        ("Post", f"{INDEX}/_search"),
        ("Get", f"{INDEX}-meta/_doc/version"),
        ("Put", f"{INDEX}/_mapping"),
        ("Get", PIPELINE),
        ("Put", PIPELINE),
    }

    from_domain = grants(each_stage, domain_policy_statements(each_stage, ingest))
    from_role = grants(each_stage, identity_statements(each_stage, ingest))

    assert from_domain == from_role
    assert writes <= from_domain
    # Nothing on the domain as a whole, no deletes of an index, no writes to documents by path
    assert not any("*" in path or path == "" for _, path in from_domain)
    assert not {method for method, _ in from_domain} & {"Delete", "Patch"}


def test_the_head_upgrade_role_may_retrain_heads_and_write_no_chunk(
    each_stage: SynthesizedStage,
) -> None:
    upgrade = each_stage.role_id(HEAD_UPGRADE_SERVICE)
    from_domain = grants(each_stage, domain_policy_statements(each_stage, upgrade))
    from_role = grants(each_stage, identity_statements(each_stage, upgrade))

    assert from_domain == from_role
    assert {
        ("Post", f"{INDEX}-meta/_search"),
        ("Post", f"{INDEX}-meta/_mget"),
        ("Post", f"{INDEX}/_search"),
        ("Post", f"{INDEX}-meta/_bulk"),
        ("Post", f"{INDEX}-meta/_update/version"),
    } <= from_domain
    assert ("Post", f"{INDEX}/_bulk") not in from_domain
    assert ("Post", f"{INDEX}/_mget") not in from_domain
    assert not any("*" in path or path == "" for _, path in from_domain)
    assert not {method for method, _ in from_domain} & {"Delete", "Patch"}
    # Nothing of the bucket, of Bedrock or of the idempotency table: it reads stored vectors
    actions = {
        action
        for statement in each_stage.role_statements(upgrade)
        for action in _as_list(statement["Action"])
    }
    assert not {a for a in actions if a.split(":")[0] in ("s3", "bedrock", "dynamodb", "kms")}


def test_after_each_deployment_of_new_code_the_outdated_heads_are_retrained(
    each_stage: SynthesizedStage,
) -> None:
    function = each_stage.function_id(HEAD_UPGRADE_SERVICE)
    ingest = each_stage.resources[each_stage.function_id(INGEST_SERVICE)]["Properties"]
    properties = each_stage.resources[function]["Properties"]
    [(trigger_id, trigger)] = [
        (key, resource)
        for key, resource in each_stage.resources.items()
        if resource["Type"] == "Custom::Trigger"
    ]
    version = trigger["Properties"]["HandlerArn"]["Ref"]

    assert properties["Handler"] == "upgrade.lambda_handler"
    assert properties["Code"] == ingest["Code"]  # the ingest function's asset, uploaded once
    assert properties["Layers"] == ingest["Layers"]
    # Invoked on each new version of the function (a new release), asynchronously, once the
    # domain exists
    assert each_stage.resources[version]["Type"] == "AWS::Lambda::Version"
    assert each_stage.resources[version]["Properties"]["FunctionName"] == {"Ref": function}
    assert trigger["Properties"]["InvocationType"] == "Event"
    assert trigger["Properties"]["ExecuteOnHandlerChange"] is True
    assert domain_id(each_stage) in trigger["DependsOn"], trigger_id
    assert each_stage.function_id(INGEST_SERVICE) in trigger["DependsOn"]
    assert properties["Timeout"] == 900  # it retrains the tenants one after another
    # A run that fails (a head not retrained, a timeout) raises an alarm
    each_stage.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
        },
    )


class RecordingConnection(Connection):
    """Answers opensearch-py's HTTP requests as a domain would, recording each one; no socket."""

    # Class-wide: opensearch-py builds the connection itself. The fixture resets it.
    requests: ClassVar[list[Grant]] = []

    def perform_request(
        self,
        method: str,
        url: str,
        params: Any = None,
        body: Any = None,
        timeout: Any = None,
        ignore: Any = (),
        headers: Any = None,
    ) -> tuple[int, dict[str, str], str]:
        path = url.partition("?")[0].strip("/")
        self.requests.append((method.title(), path))
        status, answer = self._answer(method, path, body)
        raw = json.dumps(answer)
        if status >= 300 and status not in ignore:
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json"}, raw

    @staticmethod
    def _answer(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "HEAD":
            return 404, {}
        if path.startswith("_search/pipeline/") and method == "GET":
            return 404, {"error": {"type": "resource_not_found_exception"}, "status": 404}
        if path.endswith("/_search"):
            text = body.decode() if isinstance(body, bytes) else body or ""
            if "hybrid" in text:  # the candidates: one, for the exact scoring to follow
                return 200, {"hits": {"hits": [{"_id": "faq-1", "_score": 1.0}]}}
            return 200, {"hits": {"hits": []}}
        if path.endswith("/_update/version"):
            version = {"version": 3, "reserved": 4}
            return 200, {"_id": "version", "result": "updated", "get": {"_source": version}}
        if path.endswith("-meta/_mget"):
            return 200, {"docs": [{"_id": "head-x", "found": False}]}
        if path.endswith("/_mget"):
            return 200, {"docs": []}
        if path.endswith("_bulk"):
            text = body.decode() if isinstance(body, bytes) else body
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            items = [
                {op: {"_id": action["_id"], "status": 200, "result": "updated"}}
                for line in lines
                for op, action in line.items()
                if op in ("index", "delete") and len(line) == 1
            ]
            return 200, {"took": 1, "errors": False, "items": items}
        if "/_doc/" in path:
            return 200, {"found": True, "_source": {"version": 3}}
        return 200, {"acknowledged": True, "result": "updated"}


@pytest.fixture
def knowledge_index() -> Any:
    """kefu's OpenSearchIndex on a real opensearch-py client whose transport only records."""
    RecordingConnection.requests = []
    return _opensearch_index()


def _opensearch_index() -> Any:
    from opensearchpy import OpenSearch

    from kefu.adapters.opensearch import OpenSearchIndex

    client = OpenSearch(hosts=["https://search.invalid:443"], connection_class=RecordingConnection)
    return OpenSearchIndex(client, INDEX, dim=4, refresh=False)


def test_every_request_the_adapter_makes_is_allowed_to_the_role_that_makes_it(
    dev: SynthesizedStage, knowledge_index: Any
) -> None:
    from kb_ingest.head_training import Training
    from kb_ingest.pipeline import outdated_heads, retrain_head
    from kefu.models import Chunk
    from kefu.ports import SearchQuery

    chat = grants(dev, domain_policy_statements(dev, dev.chat_role_id()))
    ingest = grants(dev, domain_policy_statements(dev, dev.role_id(INGEST_SERVICE)))
    chunk = Chunk(id="faq-1", kind="faq", lang="en", title="Returns", text="30 days", keys=("q",))

    # When the chat function answers a question
    knowledge_index.search(SearchQuery(text="returns?", vector=np.ones(4) / 2))
    _ = knowledge_index.version
    knowledge_index.load_head("default")
    chat_requests = set(RecordingConnection.requests)

    # and the ingest function syncs and removes a file
    RecordingConnection.requests = []
    knowledge_index.upsert([chunk], [np.ones((2, 4)) / 2])
    knowledge_index.delete([chunk.id], tenant=chunk.tenant)
    knowledge_index.fingerprints("default", source="faq.jsonl")
    knowledge_index.faq_questions("default")
    knowledge_index.save_head("default", b"head")
    _ = knowledge_index.version
    ingest_requests = set(RecordingConnection.requests)

    # and the head upgrade, in a container of its own, looks for outdated heads and retrains
    # one (over the full-softmax budget, where the catalog is read too)
    RecordingConnection.requests = []
    fresh = _opensearch_index()
    outdated_heads(fresh)
    fresh.load_head("default")
    # nothing to train on here: the head is removed
    retrain_head(fresh, tenant="default", training=Training(max_full_cells=-1))
    fresh.save_head("default", b"head")  # as a trained one is stored
    upgrade_requests = set(RecordingConnection.requests)
    upgrade = grants(dev, domain_policy_statements(dev, dev.role_id(HEAD_UPGRADE_SERVICE)))

    # Then each request is one its role's policy allows
    assert chat_requests == {
        ("Post", f"{INDEX}/_search"),
        ("Get", f"{INDEX}-meta/_doc/version"),
        ("Post", f"{INDEX}-meta/_mget"),
    }
    assert chat_requests <= chat
    assert ingest_requests <= ingest
    assert ("Post", f"{INDEX}/_bulk") in ingest_requests
    assert ("Post", f"{INDEX}-meta/_bulk") in ingest_requests
    assert ("Put", INDEX) in ingest_requests
    assert ("Put", PIPELINE) in ingest_requests
    assert upgrade_requests <= upgrade
    assert {
        ("Post", f"{INDEX}-meta/_search"),
        ("Put", INDEX),
        ("Get", f"{INDEX}-meta/_doc/version"),
        ("Post", f"{INDEX}-meta/_bulk"),
        ("Post", f"{INDEX}-meta/_update/version"),
    } <= upgrade_requests


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
