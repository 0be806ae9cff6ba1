"""The export Lambda: once a month, last month's hand-overs become training data and its declined
questions a knowledge-gap report, in the export bucket (`kefu.improvement`).

EventBridge's schedule invokes it with a scheduled event; the month before the event's `time` is
exported (the month before now, if the event has none). An event naming a `month` (`2026-11`),
invoked by hand, exports that month again: the export replaces its own files.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from kefu.bootstrap import build_insights, build_tickets, get_settings
from kefu.errors import ConfigurationError
from kefu.improvement import S3Sink, export_month, month_of, previous_month
from kefu.observability import logger, metrics, tracer


class ExportEvent(BaseModel):
    """The scheduled event's part this function reads (or a hand-made `{"month": ...}`)."""

    model_config = ConfigDict(extra="ignore")

    time: datetime | None = None
    month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")


def export_window(event: ExportEvent) -> tuple[datetime, datetime]:
    if event.month:
        return month_of(event.month)
    return previous_month(event.time or datetime.now(UTC))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    start, end = export_window(ExportEvent.model_validate(event))
    settings = get_settings()
    if not settings.export_bucket:
        raise ConfigurationError("KEFU_EXPORT_BUCKET is required for the monthly export")
    summary = export_month(
        tickets=build_tickets(settings),
        insights=build_insights(settings),
        sink=S3Sink(settings.export_bucket),
        start=start,
        end=end,
        extra=[re.compile(pattern) for pattern in settings.mask_patterns],
    )
    metrics.add_metric(
        name="TrainingExamplesExported", unit=MetricUnit.Count, value=summary.examples
    )
    result = summary.as_dict()
    logger.info("monthly export written", extra={**result, "bucket": settings.export_bucket})
    return result
