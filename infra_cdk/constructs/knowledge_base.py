"""The knowledge base: the bucket the enterprise puts its files in, and the index they end up in.

    S3 knowledge bucket ─► (ObjectCreated / ObjectRemoved) ─► SQS ingest queue ─► ingest Lambda
        ─► parse, chunk, embed (Bedrock Titan) ─► OpenSearch domain ◄─ chat Lambda (search)
    deployment ─► trigger ─► head upgrade Lambda ─► FAQ heads an earlier release stored, retrained

The domain lives in the VPC's private subnets: its security group lets in HTTPS from the
security groups of the functions granted here (ingest, head upgrade, chat) and nothing else.
Requests are SigV4-signed, and only the roles granted here may make them. Within one account an
allow in either the role's policy or the domain's resource policy lets a request through, so
both say the same, per role: the HTTP methods and the paths that role's requests use, and
nothing else (the chat role may search and read the KB version, never write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations, triggers
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.bundling import ingest_bundling
from infra_cdk.constructs.bedrock_access import (
    EMBEDDING_MODEL_ACTIONS,
    cross_region_model_findings,
    model_invoke_statements,
)
from infra_cdk.constructs.network import HTTPS, Network, Placement
from infra_cdk.constructs.service_function import LogLevel, ServiceFunction
from infra_cdk.constructs.session_store import expiring_table

INGEST_SERVICE_NAME = "kefu-ingest"
HEAD_UPGRADE_SERVICE_NAME = "kefu-head-upgrade"
HEAD_UPGRADE_TIMEOUT = Duration.minutes(15)
# The index name kefu's settings default to (KEFU_OPENSEARCH_INDEX).
KNOWLEDGE_INDEX_NAME = "kefu-kb"
# Powertools' DynamoDBPersistenceLayer defaults: partition key `id`, expiry `expiration`.
IDEMPOTENCY_KEY_ATTRIBUTE = "id"
IDEMPOTENCY_EXPIRY_ATTRIBUTE = "expiration"
# A file that still fails after this many deliveries goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 3
DEAD_LETTER_RETENTION = Duration.days(14)
# AWS's advice for an SQS event source: hide a message for six times the function's timeout, so
# that retries of a throttled invocation do not make it visible again while it is processed.
VISIBILITY_TIMEOUT_FACTOR = 6
INGEST_BATCH_SIZE = 5
# Parallel ingest invocations at most: embedding and bulk indexing are bounded by Bedrock's and
# the domain's throughput, not by Lambda.
INGEST_MAX_CONCURRENCY = 5
OPENSEARCH_ENGINE = opensearch.EngineVersion.OPENSEARCH_2_19

# kefu's OpenSearchIndex keeps the KB version in this document of the `<index>-meta` index,
# and fuses its candidates through the search pipeline `<index>-hybrid`.
VERSION_DOCUMENT_ID = "version"
SEARCH_PIPELINE_SUFFIX = "-hybrid"
READ_ACTIONS = ("es:ESHttpGet", "es:ESHttpHead")
# POST only where it reads: `_search` and `_mget` take their query as a body.
QUERY_ACTIONS = (*READ_ACTIONS, "es:ESHttpPost")


@dataclass(frozen=True)
class IndexAccess:
    """HTTP methods allowed on some paths below the domain (`<index>/_search`, `_bulk`)."""

    actions: tuple[str, ...]
    paths: tuple[str, ...]


def search_access(index: str) -> tuple[IndexAccess, ...]:
    """What answering a question sends: `OpenSearchIndex.search` (a `_search` for candidates
    through the search pipeline, which it names but never writes, then a `_search` scoring them),
    `version` (a GET of the meta document) and `load_head` (an `_mget` of the meta index)."""
    return (
        IndexAccess(actions=QUERY_ACTIONS, paths=(f"{index}/_search", f"{index}-meta/_mget")),
        # GET only: a POST or PUT to `_doc/<id>` would overwrite the KB version.
        IndexAccess(actions=READ_ACTIONS, paths=(f"{index}-meta/_doc/{VERSION_DOCUMENT_ID}",)),
    )


def ingest_access(index: str) -> tuple[IndexAccess, ...]:
    """What keeping the index in sync sends, read from `OpenSearchIndex`: `ensure_index` (HEAD,
    then PUT of each index, or a PUT of the index's `_mapping` for a field added since; GET,
    then PUT if it differs, of the search pipeline), `upsert` (`_mget` of stored fingerprints,
    scripted `_update`s of the version around a `_bulk`), `delete` (`_bulk`, an `_update`),
    `fingerprints` and `faq_questions` (`_search`), `save_head` (the meta index's `_bulk`, an
    `_update`) and `version`."""
    meta = f"{index}-meta"
    return (
        IndexAccess(actions=QUERY_ACTIONS, paths=(f"{index}/_search", f"{index}/_mget")),
        *_ensure_index_access(index),
        IndexAccess(
            actions=("es:ESHttpPost",),
            paths=(f"{index}/_bulk", f"{meta}/_bulk", f"{meta}/_update/{VERSION_DOCUMENT_ID}"),
        ),
    )


def head_upgrade_access(index: str) -> tuple[IndexAccess, ...]:
    """What retraining outdated FAQ heads sends: `head_tenants` (a `_search` of the meta
    index), `load_head` (its `_mget`), `version`, `faq_questions` and `catalog` (`_search`),
    and `save_head` (`ensure_index`, the meta index's `_bulk`, an `_update`). No chunk is
    written."""
    meta = f"{index}-meta"
    return (
        IndexAccess(
            actions=QUERY_ACTIONS, paths=(f"{index}/_search", f"{meta}/_search", f"{meta}/_mget")
        ),
        *_ensure_index_access(index),
        IndexAccess(
            actions=("es:ESHttpPost",),
            paths=(f"{meta}/_bulk", f"{meta}/_update/{VERSION_DOCUMENT_ID}"),
        ),
    )


def _ensure_index_access(index: str) -> tuple[IndexAccess, ...]:
    """`ensure_index` and `version`, which every writer sends."""
    meta = f"{index}-meta"
    return (
        IndexAccess(actions=READ_ACTIONS, paths=(f"{meta}/_doc/{VERSION_DOCUMENT_ID}",)),
        IndexAccess(actions=("es:ESHttpHead", "es:ESHttpPut"), paths=(index, meta)),
        IndexAccess(actions=("es:ESHttpPut",), paths=(f"{index}/_mapping", f"{meta}/_mapping")),
        IndexAccess(
            actions=("es:ESHttpGet", "es:ESHttpPut"),
            paths=(f"_search/pipeline/{index}{SEARCH_PIPELINE_SUFFIX}",),
        ),
    )


class KnowledgeBase(Construct):
    """The knowledge bucket, the ingest queue with its DLQ and alarm, the ingest function with its
    idempotency table, the OpenSearch domain that holds the index, and the head upgrade run
    after each deployment.

    The bucket, the queues and the idempotency table are encrypted with the knowledge base's own
    customer-managed keys; the domain encrypts at rest and between nodes, and takes HTTPS only.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage_name: str,
        code_dir: Path,
        layer: lambda_.ILayerVersion,
        bedrock_embedding_model_id: str,
        memory_mb: int,
        timeout: Duration,
        log_level: LogLevel,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        opensearch_instance_type: str,
        opensearch_instance_count: int,
        opensearch_volume_size_gb: int,
        opensearch_availability_zones: int,
        opensearch_dedicated_master_count: int,
        opensearch_dedicated_master_type: str | None,
        network: Network,
    ) -> None:
        super().__init__(scope, construct_id)
        self.index_name = KNOWLEDGE_INDEX_NAME
        self.search_security_group = ec2.SecurityGroup(
            self,
            "SearchSecurityGroup",
            vpc=network.vpc,
            description="Kefu knowledge index: HTTPS from the functions that search or write it",
            allow_all_outbound=False,
        )
        # The ingest and head-upgrade functions share one group: they reach the same things.
        self.placement = network.placement(
            "IngestSecurityGroup",
            description="Kefu ingest and head-upgrade functions: out on HTTPS only",
        )
        self._allow_https_from(self.placement)
        # Two keys: S3 notifications into an encrypted queue put the bucket's ARN into the queue
        # key's policy, so one key for both would make the bucket and the key depend on each other.
        self.files_key = kms.Key(
            self,
            "FilesKey",
            description="Encrypts Kefu's knowledge files",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.key = kms.Key(
            self,
            "IngestKey",
            description="Encrypts Kefu's ingest queues and idempotency records",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )

        self.bucket = self._bucket(removal_policy=removal_policy)
        self.dead_letter_queue = sqs.Queue(
            self,
            "IngestDeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
            removal_policy=removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "IngestQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(timeout.to_seconds() * VISIBILITY_TIMEOUT_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=MAX_RECEIVE_COUNT, queue=self.dead_letter_queue
            ),
            removal_policy=removal_policy,
        )
        for event in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
            self.bucket.add_event_notification(event, s3n.SqsDestination(self.queue))
        self._acknowledge_notifications_handler()
        self.dead_letter_alarm = self._alarm_on_any(
            "IngestDeadLetterAlarm",
            "Knowledge files failed ingestion "
            f"{MAX_RECEIVE_COUNT} times and wait in the ingest dead-letter queue",
            self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
        )

        self.idempotency_table = expiring_table(
            self,
            "IdempotencyTable",
            key=IDEMPOTENCY_KEY_ATTRIBUTE,
            expiry=IDEMPOTENCY_EXPIRY_ATTRIBUTE,
            encryption_key=self.key,
            removal_policy=removal_policy,
        )

        self.domain = self._domain(
            # Renamed from kefu-<stage>-kb when the domain moved into the VPC: a domain with a
            # public endpoint cannot be moved, so a stage deployed before gets a new domain and
            # loses the old one (README, Deploying: ingest the bucket again).
            domain_name=f"kefu-kb-{stage_name}",
            log_retention=log_retention,
            removal_policy=removal_policy,
            instance_type=opensearch_instance_type,
            instance_count=opensearch_instance_count,
            volume_size_gb=opensearch_volume_size_gb,
            availability_zones=opensearch_availability_zones,
            dedicated_master_count=opensearch_dedicated_master_count,
            dedicated_master_type=opensearch_dedicated_master_type,
            network=network,
        )

        def knowledge_function(
            construct_id: str,
            *,
            service_name: str,
            description: str,
            handler: str,
            environment: Mapping[str, str],
            function_timeout: Duration,
        ) -> ServiceFunction:
            """A function of the ingest asset (uploaded once for both) that reaches the index;
            `KEFU_EMBEDDER` gives the index's vector size (Titan's) to every one of them."""
            return ServiceFunction(
                self,
                construct_id,
                service_name=service_name,
                description=description,
                code_dir=code_dir,
                handler=handler,
                layers=[layer],
                bundling=ingest_bundling(),
                environment={
                    "KEFU_EMBEDDER": "bedrock",
                    **environment,
                    **self.index_environment,
                },
                memory_mb=memory_mb,
                timeout=function_timeout,
                log_level=log_level,
                log_retention=log_retention,
                removal_policy=removal_policy,
                placement=self.placement,
            )

        ingest = knowledge_function(
            "IngestFunction",
            service_name=INGEST_SERVICE_NAME,
            description="Kefu ingest: keeps the knowledge index in sync with the knowledge bucket",
            handler="handler.lambda_handler",
            environment={
                "KEFU_BEDROCK_EMBEDDING_MODEL_ID": bedrock_embedding_model_id,
                "KEFU_IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
            },
            function_timeout=timeout,
        )
        self.ingest_function = ingest.function
        ingest.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=INGEST_BATCH_SIZE,
                max_concurrency=INGEST_MAX_CONCURRENCY,
                report_batch_item_failures=True,
            )
        )
        self._allow_reading_files(ingest.role)
        self._allow_embedding(ingest.role, model_id=bedrock_embedding_model_id)
        self.idempotency_table.grant_read_write_data(ingest.role)
        self._acknowledge_table_key_grant(ingest.role)
        self._allow_index(ingest.role, access=ingest_access(self.index_name))

        # After each deployment that gives this function a new version (new code, a new layer,
        # new configuration), the FAQ heads this release cannot read whole are trained again;
        # without it they would wait for each tenant's next change. Invoked asynchronously, so
        # a long retraining does not hold the deployment; it gets Lambda's longest timeout (it
        # retrains the tenants one after another), and a run that fails (a head it could not
        # retrain, a timeout) is retried by Lambda (twice), each run retraining only what is
        # still outdated, and raises the alarm. After the ingest
        # function is updated, so that new invocations store current heads (one of the earlier
        # release still running then can store an outdated head: the next deployment's run, or
        # the tenant's next change, retrains it).
        upgrade = knowledge_function(
            "HeadUpgradeFunction",
            service_name=HEAD_UPGRADE_SERVICE_NAME,
            description="Kefu: retrains the FAQ heads an earlier release stored (after a deploy)",
            handler="upgrade.lambda_handler",
            environment={},
            function_timeout=HEAD_UPGRADE_TIMEOUT,
        )
        self.head_upgrade_function = upgrade.function
        self._allow_index(upgrade.role, access=head_upgrade_access(self.index_name))
        self.head_upgrade_alarm = self._alarm_on_any(
            "HeadUpgradeAlarm",
            "Outdated FAQ heads were not all retrained after a deployment "
            "(the kefu-head-upgrade function's log says which)",
            upgrade.function.metric_errors(
                period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
            ),
        )
        self.head_upgrade = triggers.Trigger(
            self,
            "HeadUpgrade",
            handler=upgrade.function,
            execute_after=[self.domain, ingest.function],
            invocation_type=triggers.InvocationType.EVENT,
        )

    def _alarm_on_any(
        self, construct_id: str, description: str, metric: cloudwatch.Metric
    ) -> cloudwatch.Alarm:
        """An alarm as soon as `metric` is above 0 in one period (no data: no alarm)."""
        return metric.create_alarm(
            self,
            construct_id,
            alarm_description=description,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    @property
    def index_environment(self) -> Mapping[str, str]:
        """What a function needs to find the index: `KEFU_INDEX`, its URL and its name."""
        return {
            "KEFU_INDEX": "opensearch",
            "KEFU_OPENSEARCH_URL": f"https://{self.domain.domain_endpoint}",
            "KEFU_OPENSEARCH_INDEX": self.index_name,
        }

    def grant_search(self, function: lambda_.IFunction, placement: Placement) -> None:
        """Let `function`, placed in the VPC, search the index and read its version (never
        write), and tell it where."""
        if function.role is None:
            raise ValueError("grant_search needs a function with an execution role")
        self._allow_https_from(placement)
        self._allow_index(function.role, access=search_access(self.index_name))
        if isinstance(function, lambda_.Function):
            for name, value in self.index_environment.items():
                function.add_environment(name, value)

    def _bucket(self, *, removal_policy: RemovalPolicy) -> s3.Bucket:
        # Server access logs may not go to an SSE-KMS bucket: their bucket uses S3-managed keys.
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=removal_policy,
        )
        return s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.files_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="knowledge-bucket/",
            # Versions let an editor undo a bad upload; old ones need not live for ever.
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90)),
            ],
            removal_policy=removal_policy,
        )

    def _domain(
        self,
        *,
        domain_name: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        instance_type: str,
        instance_count: int,
        volume_size_gb: int,
        availability_zones: int,
        dedicated_master_count: int,
        dedicated_master_type: str | None,
        network: Network,
    ) -> opensearch.Domain:
        stack = Stack.of(self)
        # Named, so that its resource policy can name its ARN without referring to the domain
        # itself (a domain's policy cannot depend on the domain).
        self._domain_arn = stack.format_arn(
            service="es", resource="domain", resource_name=domain_name
        )
        log_groups = {
            kind: logs.LogGroup(
                self, f"Search{kind}Logs", retention=log_retention, removal_policy=removal_policy
            )
            for kind in ("App", "SlowSearch", "SlowIndex")
        }
        # OpenSearch writes its logs under a CloudWatch Logs resource policy. A native one instead
        # of the L2's custom resource: no extra Lambda function in the stack.
        logs.ResourcePolicy(
            self,
            "SearchLogsPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in log_groups.values()],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": stack.account},
                        "ArnLike": {"aws:SourceArn": self._domain_arn},
                    },
                )
            ],
        )
        domain = opensearch.Domain(
            self,
            "SearchDomain",
            domain_name=domain_name,
            version=OPENSEARCH_ENGINE,
            enable_version_upgrade=True,
            capacity=opensearch.CapacityConfig(
                data_node_instance_type=instance_type,
                data_nodes=instance_count,
                master_nodes=dedicated_master_count or None,
                master_node_instance_type=dedicated_master_type,
                # Multi-AZ with standby needs three AZs, dedicated managers and data nodes in
                # multiples of three on every stage; plain zone awareness is configured instead.
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(
                volume_size=volume_size_gb, volume_type=ec2.EbsDeviceVolumeType.GP3
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(
                enabled=availability_zones > 1,
                availability_zone_count=availability_zones if availability_zones > 1 else None,
            ),
            # One private subnet per AZ the domain spans.
            vpc=network.vpc,
            vpc_subnets=[ec2.SubnetSelection(subnets=network.subnets_for(availability_zones))],
            security_groups=[self.search_security_group],
            node_to_node_encryption=True,
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=log_groups["App"],
                slow_search_log_enabled=True,
                slow_search_log_group=log_groups["SlowSearch"],
                slow_index_log_enabled=True,
                slow_index_log_group=log_groups["SlowIndex"],
            ),
            suppress_logs_resource_policy=True,
            removal_policy=removal_policy,
        )
        # IAM-based access: the resource policy gets each granted role's own statements (see
        # `_allow_index`). Written onto the CloudFormation resource (a lazily rendered document)
        # instead of through the L2's access-policy custom resource, which would add a Lambda
        # function with AWS-wide rights.
        # Not minimized: merging would mix the roles' statements; each role keeps its own.
        self._access_policy = iam.PolicyDocument(minimize=False)
        cfn_domain = domain.node.default_child
        assert isinstance(cfn_domain, opensearch.CfnDomain)
        cfn_domain.access_policies = self._access_policy
        self._acknowledge_domain(
            domain,
            availability_zones=availability_zones,
            dedicated_master_count=dedicated_master_count,
        )
        return domain

    def _allow_index(self, role: iam.IRole, *, access: Sequence[IndexAccess]) -> None:
        """The same statements in the role's policy and, naming the role, in the domain's."""
        for entry in access:
            resources = [f"{self._domain_arn}/{path}" for path in entry.paths]
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=list(entry.actions), resources=resources)
            )
            self._access_policy.add_statements(
                iam.PolicyStatement(
                    principals=[iam.ArnPrincipal(role.role_arn)],
                    actions=list(entry.actions),
                    resources=resources,
                )
            )

    def _allow_https_from(self, placement: Placement) -> None:
        self.search_security_group.add_ingress_rule(
            placement.security_group, HTTPS, "HTTPS from a function that uses the index"
        )

    def _allow_reading_files(self, role: iam.IRole) -> None:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[self.bucket.arn_for_objects("*")]
            )
        )
        # Without ListBucket a missing object reads as 403, not 404: the function could not tell
        # a deleted file from a forbidden one.
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        self.files_key.grant_decrypt(role)
        bucket = self.bucket.node.default_child
        assert isinstance(bucket, s3.CfnBucket)
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{Stack.of(self).get_logical_id(bucket)}.Arn>/*]",
                reason="The ingest function reads whichever knowledge file was uploaded: any "
                "object of the knowledge bucket, and only of that bucket.",
            )
        )

    def _allow_embedding(self, role: iam.IRole, *, model_id: str) -> None:
        for statement in model_invoke_statements(
            self, model_id=model_id, actions=EMBEDDING_MODEL_ACTIONS
        ):
            role.add_to_principal_policy(statement)
        for finding in cross_region_model_findings(self, model_id=model_id):
            Validations.of(role).acknowledge(
                Acknowledgment(
                    id=finding,
                    reason="A cross-region inference profile routes to its foundation model in "
                    "several regions; the statement only allows calls made through that one "
                    "profile (bedrock:InferenceProfileArn condition).",
                )
            )

    def _acknowledge_notifications_handler(self) -> None:
        # CDK configures bucket notifications through one custom-resource function per stack.
        stack = Stack.of(self)
        for child in stack.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                role = child.node.try_find_child("Role")
                Validations.of(role or child).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                        "service-role/AWSLambdaBasicExecutionRole]",
                        reason="The role of CDK's own bucket-notifications custom resource, which "
                        "only runs at deployment to write the knowledge bucket's notification "
                        "configuration; CDK does not let it take another policy.",
                    )
                )

    def _acknowledge_table_key_grant(self, role: iam.IRole) -> None:
        for action in ("kms:ReEncrypt*", "kms:GenerateDataKey*"):
            Validations.of(role).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Action::{action}]",
                    reason="Added by DynamoDB's grant on the idempotency table and scoped to the "
                    "knowledge base's own customer-managed key; DynamoDB needs them to encrypt.",
                )
            )

    def _acknowledge_domain(
        self, domain: opensearch.Domain, *, availability_zones: int, dedicated_master_count: int
    ) -> None:
        acknowledgments = [
            Acknowledgment(
                id="AwsSolutions-OS3",
                reason="The domain is in the VPC: its security group, not an IP allow-list, "
                "decides who may connect, and IAM (SigV4, the resource policy) what they may do.",
            ),
        ]
        if availability_zones == 1:
            acknowledgments.append(
                Acknowledgment(
                    id="AwsSolutions-OS7",
                    reason="This stage runs a single-AZ domain on purpose (stage config "
                    "opensearch_availability_zones=1): the index can be rebuilt from the bucket.",
                )
            )
        if dedicated_master_count == 0:
            acknowledgments.append(
                Acknowledgment(
                    id="AwsSolutions-OS4",
                    reason="This stage runs without dedicated cluster-manager nodes (stage config "
                    "opensearch_dedicated_master_count=0): too few data nodes to need them.",
                )
            )
        Validations.of(domain).acknowledge(*acknowledgments)
