"""The VPC the functions that reach the index and the answer cache run in.

    public subnets (NAT gateways) ◄─ private subnets: chat, ingest and head-upgrade functions,
                                      OpenSearch domain, ElastiCache Serverless cache

Two or three AZs, one private subnet in each; the functions leave the VPC for Bedrock, the other
AWS APIs and the enterprise's order API through NAT, except for S3 and DynamoDB, which have free
gateway endpoints (no NAT data charge on the session and ticket tables or the knowledge files).
Every flow is logged. Nothing inside takes traffic from the internet: each security group lets
in only the groups of the functions that need it (see `Network.function_group`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

HTTPS = ec2.Port.tcp(443)
PRIVATE_SUBNET_MASK = 20
PUBLIC_SUBNET_MASK = 24


class Network(Construct):
    """A VPC of `zones` AZs with `nat_gateways` NAT gateways, gateway endpoints for S3 and
    DynamoDB, and flow logs in CloudWatch Logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        zones: int,
        nat_gateways: int,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 2 <= zones <= 3:
            raise ValueError(f"the VPC spans two or three AZs, not {zones}")
        if not 1 <= nat_gateways <= zones:
            raise ValueError(f"{nat_gateways} NAT gateways for {zones} AZs: give 1 to {zones}")
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=removal_policy
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            availability_zones=Stack.of(self).availability_zones[:zones],
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=PUBLIC_SUBNET_MASK
                ),
                ec2.SubnetConfiguration(
                    name="Private",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=PRIVATE_SUBNET_MASK,
                ),
            ],
            # The default security group loses its rules (at deployment, through CDK's custom
            # resource): nothing placed in it by mistake can talk to anything.
            restrict_default_security_group=True,
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDb": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                ),
            },
        )
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

    def placement(self, construct_id: str, *, description: str) -> Placement:
        """A place for a function, with its own security group: out on HTTPS only (AWS APIs,
        the order API, the index); what else it may reach (the cache) is opened by the resource
        that lets it in."""
        group = ec2.SecurityGroup(
            self,
            construct_id,
            vpc=self.vpc,
            description=description,
            allow_all_outbound=False,
        )
        group.add_egress_rule(ec2.Peer.any_ipv4(), HTTPS, "HTTPS: AWS APIs, the order API")
        return Placement(self, group)

    def subnets_for(self, count: int) -> list[ec2.ISubnet]:
        """The first `count` private subnets, one per AZ (a single-AZ domain takes one)."""
        subnets = self.vpc.select_subnets(subnet_type=self.private_subnets.subnet_type).subnets
        if count > len(subnets):
            raise ValueError(f"{count} subnets asked of a VPC with {len(subnets)} private ones")
        return list(subnets[:count])


@dataclass(frozen=True)
class Placement:
    """Where a function runs: the VPC's private subnets, behind its own security group."""

    network: Network
    security_group: ec2.SecurityGroup
