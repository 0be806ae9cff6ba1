"""What a stage costs a month before anyone uses it: its always-on parts, read from the
synthesized template and priced at on-demand list prices.

    python -m infra_cdk.cost cdk.out/KefuService-dev.template.json   # after `make synth`

Only what bills by the hour or the month whether or not a customer writes: NAT gateways and
their public IPv4 addresses, the OpenSearch domain's nodes and storage, the answer cache's
minimum, the chat function's SnapStart snapshot, KMS keys, secrets and alarms. Lambda,
API Gateway, DynamoDB on demand, SQS, SNS, S3,
Bedrock, the cache's ECPUs, SnapStart's restores, NAT data and logs bill by use and are not
counted.

The prices are us-east-1's in US dollars (the AWS pricing pages, 2025); other regions differ by
a few per cent. A month is 730 hours.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOURS_A_MONTH = 730
NAT_GATEWAY_HOUR = 0.045
PUBLIC_IPV4_HOUR = 0.005
# OpenSearch Service on-demand instance hours, by instance type.
OPENSEARCH_INSTANCE_HOUR = {
    "t3.medium.search": 0.073,
    "t3.large.search": 0.145,
    "m7g.medium.search": 0.068,
    "m7g.large.search": 0.136,
    "m7g.xlarge.search": 0.272,
    "r7g.large.search": 0.181,
    "r7g.xlarge.search": 0.362,
}
OPENSEARCH_GP3_GB_MONTH = 0.122
# ElastiCache Serverless for Valkey bills stored data by the GB-hour, at least 100 MB.
VALKEY_SERVERLESS_GB_HOUR = 0.0837
VALKEY_SERVERLESS_MINIMUM_GB = 0.1
# A SnapStart snapshot of a Python function is cached, by the GB of its memory, for as long as
# its version exists (each deploy's replaced version is deleted: one is cached at a time).
SNAPSTART_CACHE_GB_SECOND = 0.0000015046
KMS_KEY_MONTH = 1.0
SECRET_MONTH = 0.40
ALARM_MONTH = 0.10


@dataclass(frozen=True)
class Line:
    item: str
    quantity: float
    unit: str
    monthly: float


def _of_type(template: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    resources: dict[str, Any] = template.get("Resources", {})
    return [
        resource.get("Properties", {})
        for resource in resources.values()
        if resource.get("Type") == resource_type
    ]


def always_on(template: dict[str, Any]) -> list[Line]:
    """The template's always-on parts with their monthly cost."""
    lines: list[Line] = []
    nat = len(_of_type(template, "AWS::EC2::NatGateway"))
    if nat:
        lines.append(Line("NAT gateways", nat, "gateway", nat * NAT_GATEWAY_HOUR * HOURS_A_MONTH))
    addresses = len(_of_type(template, "AWS::EC2::EIP"))
    if addresses:
        lines.append(
            Line(
                "public IPv4 addresses (the NAT gateways')",
                addresses,
                "address",
                addresses * PUBLIC_IPV4_HOUR * HOURS_A_MONTH,
            )
        )
    for domain in _of_type(template, "AWS::OpenSearchService::Domain"):
        cluster = domain["ClusterConfig"]
        nodes = [("data", cluster["InstanceType"], cluster.get("InstanceCount", 1))]
        if cluster.get("DedicatedMasterEnabled"):
            nodes.append(
                ("cluster-manager", cluster["DedicatedMasterType"], cluster["DedicatedMasterCount"])
            )
        for role, instance_type, count in nodes:
            if instance_type not in OPENSEARCH_INSTANCE_HOUR:
                raise SystemExit(f"cost: no price for {instance_type}: add it to infra_cdk/cost.py")
            hourly = OPENSEARCH_INSTANCE_HOUR[instance_type]
            lines.append(
                Line(
                    f"OpenSearch {role} nodes, {instance_type}",
                    count,
                    "node",
                    count * hourly * HOURS_A_MONTH,
                )
            )
        storage = domain["EBSOptions"]["VolumeSize"] * cluster.get("InstanceCount", 1)
        lines.append(
            Line("OpenSearch gp3 storage", storage, "GB", storage * OPENSEARCH_GP3_GB_MONTH)
        )
    for _cache in _of_type(template, "AWS::ElastiCache::ServerlessCache"):
        lines.append(
            Line(
                "ElastiCache Serverless (Valkey), 100 MB minimum",
                VALKEY_SERVERLESS_MINIMUM_GB,
                "GB",
                VALKEY_SERVERLESS_MINIMUM_GB * VALKEY_SERVERLESS_GB_HOUR * HOURS_A_MONTH,
            )
        )
    for function in _of_type(template, "AWS::Lambda::Function"):
        if function.get("SnapStart", {}).get("ApplyOn") == "PublishedVersions":
            gigabytes = function.get("MemorySize", 128) / 1024
            lines.append(
                Line(
                    "Lambda SnapStart snapshot cache",
                    gigabytes,
                    "GB",
                    gigabytes * SNAPSTART_CACHE_GB_SECOND * 3600 * HOURS_A_MONTH,
                )
            )
    for label, resource_type, price in (
        ("KMS keys", "AWS::KMS::Key", KMS_KEY_MONTH),
        ("Secrets Manager secrets", "AWS::SecretsManager::Secret", SECRET_MONTH),
        ("CloudWatch alarms", "AWS::CloudWatch::Alarm", ALARM_MONTH),
    ):
        count = len(_of_type(template, resource_type))
        if count:
            lines.append(Line(label, count, "each", count * price))
    return lines


def total(lines: list[Line]) -> float:
    return sum(line.monthly for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra_cdk.cost", description=__doc__)
    parser.add_argument("templates", nargs="+", type=Path, help="synthesized templates")
    args = parser.parse_args(argv)
    for path in args.templates:
        lines = always_on(json.loads(path.read_text()))
        print(f"{path.name}: always-on parts, USD a month (us-east-1 list prices)")
        for line in lines:
            print(f"  {line.item:<50} {line.quantity:>6g} {line.unit:<10} {line.monthly:9.2f}")
        print(f"  {'total':<68}{total(lines):9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
