"""Entry point of the CDK app: `cdk synth -c stage=dev` runs `python -m infra_cdk.app`.

Synthesis needs no AWS credentials and no network: nothing here looks anything up, and a stage
without an account and region gives an environment-agnostic stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra_cdk.config import stage_config_from_context
from infra_cdk.stacks.service_stack import KefuServiceStack


def build_app(*, context: Mapping[str, Any] | None = None, outdir: str | None = None) -> App:
    """The app with its stack for the selected stage, checked by cdk-nag when it synthesizes.

    The CLI hands cdk.json's context over the environment; tests pass `context` themselves.
    """
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    config = stage_config_from_context(app)
    KefuServiceStack(app, config.stack_name, config=config)
    Tags.of(app).add("kefu:project", "kefu")
    # cdk-nag 3 is a policy-validation plugin: findings that are not acknowledged fail synthesis.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app


def main() -> None:
    build_app().synth()


if __name__ == "__main__":
    main()
