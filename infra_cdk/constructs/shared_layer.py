"""The `kefu` Lambda layer shared by every function."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra_cdk.constructs.service_function import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME


class SharedLayerMissingError(FileNotFoundError):
    """The layer has not been built yet."""


class SharedLayer(Construct):
    """The shared client layer: `kefu` and its pinned dependencies under /opt/python.

    The folder is filled without Docker by `make layer` (layers/build_layer.py); this construct
    only packages it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, layer_dir: Path) -> None:
        super().__init__(scope, construct_id)
        if not (layer_dir / "python" / "kefu").is_dir():
            raise SharedLayerMissingError(
                f"the shared Lambda layer is not built: {layer_dir / 'python'} is missing or has "
                "no kefu package. Run `make layer` (or `.venv/bin/python layers/build_layer.py`) "
                "first."
            )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(str(layer_dir)),
            compatible_runtimes=[LAMBDA_RUNTIME],
            compatible_architectures=[LAMBDA_ARCHITECTURE],
            description="kefu: domain logic, ports and adapters, with its pinned dependencies",
        )
