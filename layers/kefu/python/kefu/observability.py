"""Logger, Tracer and Metrics, created once and configured by the POWERTOOLS_* environment."""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.exceptions import SchemaValidationError
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

# Libraries that write request and response bodies (what customers typed) in their DEBUG
# lines: botocore (a Titan embedding's input, a Converse prompt), OpenSearch (a query), the
# Anthropic SDK and its HTTP client, and Powertools' event handler (a route's arguments: the
# chat request). They log at INFO and above only, whatever level the root logger is given
# (Lambda's log-level filtering gives it the stage's: DEBUG in dev) or POWERTOOLS_DEBUG gives
# Powertools.
PAYLOAD_LOGGERS = (
    "botocore",
    "opensearch",
    "anthropic",
    "httpx2",
    "aws_lambda_powertools.event_handler",
)
for _name in PAYLOAD_LOGGERS:
    _library = logging.getLogger(_name)
    _library.setLevel(max(_library.level, logging.INFO))

logger = Logger()
# Only what the functions call out with: botocore (every AWS service), requests (OpenSearch, the
# order API) and http.client (the helpdesk webhook). Tracer's default patches every library the
# X-Ray SDK knows that is installed, importing each at a cold start. The Anthropic SDK's HTTP
# client (httpx2) is not one the SDK can patch.
tracer = Tracer(patch_modules=("botocore", "requests", "httplib"))
metrics = Metrics()


def emit(
    name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count, **dimensions: str
) -> None:
    """One CloudWatch metric (EMF) with its own dimensions, written at once: the service's
    business metrics (hand-overs by trigger, ratings, response time) never take on the
    dimensions another metric of the same invocation added."""
    # Without a namespace (a CLI run, a test) there is nowhere to put a metric.
    if is_metrics_disabled() or not os.environ.get("POWERTOOLS_METRICS_NAMESPACE"):
        return
    try:
        with single_metric(name=name, unit=unit, value=value) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension)
    except SchemaValidationError as exc:
        # A metric is never worth failing a turn for.
        logger.warning("metric not emitted", extra={"metric": name, "reason": str(exc)})
