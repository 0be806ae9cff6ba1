"""The chat Lambda: API Gateway (REST) proxy events in, the chat API's responses out."""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kefu.api import resolve
from kefu.bootstrap import build_ahead
from kefu.observability import logger, metrics, tracer

# Under SnapStart (and provisioned concurrency) the service is built here, in init, so that a
# restored environment answers its first request without building it.
build_ahead(os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(event, context)
