"""The answer cache: an ElastiCache Serverless (Valkey) cache that only the chat function reaches.

    chat Lambda (its security group) ──TLS, user + password──► cache (its security group)
                     └── reads the user's password from Secrets Manager

Serverless caches always encrypt in transit and at rest and take only RBAC users. The one user
here may read and write answer keys (`kefu:answer:*`) with GET and SET, and nothing else; its
password is generated into a Secrets Manager secret that CloudFormation hands to the user and
the chat function reads when it connects.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra_cdk.constructs.network import Network, Placement

CACHE_ENGINE = "valkey"
CACHE_ENGINE_VERSION = "8"
# The primary endpoint's port (the reader endpoint, one above it, is not used).
CACHE_PORT = 6379
CACHE_USER_NAME = "kefu-chat"
# What `kefu.adapters.cache.RedisAnswerCache` sends: GET and SET of answer keys, and PING for
# its health checks. tests/functional/test_answer_cache_redis.py connects as a user with this
# access string to a real Redis.
CACHE_ACCESS_STRING = "on ~kefu:answer:* resetchannels -@all +get +set +ping"
# ElastiCache passwords are 16 to 128 printable characters without , " / or @.
PASSWORD_LENGTH = 40


class AnswerCache(Construct):
    """The cache, its security group, its user and user group, and the user's secret."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage_name: str,
        network: Network,
        max_data_gb: int,
        max_ecpu_per_second: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            description="Kefu answer cache: reached only by the chat function",
            allow_all_outbound=False,
        )
        self.secret = secretsmanager.Secret(
            self,
            "UserSecret",
            description=f"Kefu answer cache ({stage_name}): the chat function's user and password",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=f'{{"username": "{CACHE_USER_NAME}"}}',
                generate_string_key="password",
                password_length=PASSWORD_LENGTH,
                exclude_punctuation=True,
            ),
            removal_policy=removal_policy,
        )
        user = elasticache.CfnUser(
            self,
            "User",
            engine=CACHE_ENGINE,
            user_id=f"kefu-{stage_name}-chat",
            user_name=CACHE_USER_NAME,
            access_string=CACHE_ACCESS_STRING,
            authentication_mode={
                "Type": "password",
                "Passwords": [self.secret.secret_value_from_json("password").unsafe_unwrap()],
            },
        )
        # A Valkey user group holds users with passwords (or IAM) only: no open `default` user.
        user_group = elasticache.CfnUserGroup(
            self,
            "UserGroup",
            engine=CACHE_ENGINE,
            user_group_id=f"kefu-{stage_name}-answers",
            user_ids=[user.user_id],
        )
        user_group.add_resource_dependency(user)
        subnets = network.vpc.select_subnets(subnet_type=network.private_subnets.subnet_type)
        self.cache = elasticache.CfnServerlessCache(
            self,
            "Cache",
            engine=CACHE_ENGINE,
            major_engine_version=CACHE_ENGINE_VERSION,
            serverless_cache_name=f"kefu-{stage_name}-answers",
            description="Kefu: answers to frequent questions",
            user_group_id=user_group.user_group_id,
            security_group_ids=[self.security_group.security_group_id],
            subnet_ids=subnets.subnet_ids,
            # The bill's upper bound: the cache never grows past these.
            cache_usage_limits=elasticache.CfnServerlessCache.CacheUsageLimitsProperty(
                data_storage=elasticache.CfnServerlessCache.DataStorageProperty(
                    maximum=max_data_gb, unit="GB"
                ),
                ecpu_per_second=elasticache.CfnServerlessCache.ECPUPerSecondProperty(
                    maximum=max_ecpu_per_second
                ),
            ),
        )
        self.cache.add_resource_dependency(user_group)
        # Everything in it can be answered again: no snapshots, nothing to keep.
        self.cache.apply_removal_policy(RemovalPolicy.DESTROY)
        Validations.of(self.secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="The cache user's password is set by CloudFormation from this secret: a "
                "new value takes effect with the next deployment (the chat function re-reads "
                "the secret for each new connection), so a rotation schedule would only break "
                "the user's login between deployments.",
            )
        )

    @property
    def url(self) -> str:
        """The primary endpoint, TLS (`rediss://`), without credentials."""
        return f"rediss://{self.cache.attr_endpoint_address}:{self.cache.attr_endpoint_port}"

    def grant_connect(self, function: lambda_.Function, placement: Placement) -> None:
        """Let `function` (placed in the VPC) connect: the port open from its security group
        only, the secret readable by its role, and where to find both in its environment."""
        port = ec2.Port.tcp(CACHE_PORT)
        self.security_group.add_ingress_rule(
            placement.security_group, port, "the chat function's answer cache connections"
        )
        placement.security_group.add_egress_rule(
            self.security_group, port, "the answer cache (TLS)"
        )
        self.secret.grant_read(function)
        function.add_environment("KEFU_ANSWER_CACHE", "redis")
        function.add_environment("KEFU_REDIS_URL", self.url)
        function.add_environment("KEFU_REDIS_SECRET", self.secret.secret_arn)
