"""The head upgrade Lambda: after each deployment, the FAQ heads an earlier release stored are
trained again (`head_training.outdated`: without the spread, trained otherwise, or unreadable).

The KnowledgeBase construct's trigger invokes it, asynchronously, after each deployment that
gives the function a new version; without it such a head would be left unread until the
tenant's next change. It retrains only what is still outdated, so running it again (Lambda's
retry of a failed run) is harmless. A head that fails is logged and counted, the others go on,
and the run then fails so that Lambda tries again and the construct's alarm sees it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from kb_ingest.pipeline import outdated_heads, retrain_heads
from kefu.bootstrap import build_index, get_settings
from kefu.observability import logger, metrics, tracer
from kefu.ports import KnowledgeIndex


class HeadUpgradeIncomplete(Exception):
    """Some outdated heads could not be retrained (each is logged): the run is retried."""


@lru_cache(maxsize=1)
def _index() -> KnowledgeIndex:
    return build_index(get_settings(), interactive=False)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)  # tenant names stay out of traces
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Returns the outdated tenants and those whose training ran (a head the index refused
    included)."""
    tenants = outdated_heads(_index())
    logger.info("FAQ heads stored by an earlier release", extra={"tenants": len(tenants)})
    metrics.add_metric(name="OutdatedHeads", unit=MetricUnit.Count, value=len(tenants))
    trained = retrain_heads(_index(), tenants)
    if len(trained) < len(tenants):
        failed = len(tenants) - len(trained)
        metrics.add_metric(name="HeadTrainingFailures", unit=MetricUnit.Count, value=failed)
        raise HeadUpgradeIncomplete(f"{failed} of {len(tenants)} outdated FAQ heads not retrained")
    return {"outdated": tenants, "trained": trained}
