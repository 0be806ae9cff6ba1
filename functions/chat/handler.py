"""The chat Lambda: API Gateway (REST) proxy events in, the chat API's responses out."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kefu.api import app
from kefu.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
