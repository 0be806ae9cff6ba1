"""The shared layer is built without Docker, for the Lambda target, and only when inputs change."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_cdk import App, Stack

from infra_cdk.assets import REPO_ROOT
from infra_cdk.constructs.service_function import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from infra_cdk.constructs.shared_layer import SharedLayer, SharedLayerMissingError


def _load_build_layer() -> ModuleType:
    # layers/ is not a package: load the script as the Makefile runs it.
    spec = importlib.util.spec_from_file_location(
        "build_layer", REPO_ROOT / "layers" / "build_layer.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


build_layer = _load_build_layer()


class RecordingInstaller:
    """Stands in for pip: writes one fake wheel and counts the installs."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, requirements: Path, site_dir: Path) -> None:
        self.runs += 1
        (site_dir / "pydantic").mkdir(parents=True)
        (site_dir / "pydantic" / "__init__.py").write_text(requirements.read_text())


@pytest.fixture
def layer_source(tmp_path: Path) -> Any:
    """A layer source tree in a temporary folder, as `LayerPaths`."""
    source = tmp_path / "layers" / "kefu"
    (source / "python" / "kefu").mkdir(parents=True)
    (source / "requirements.txt").write_text("pydantic==2.14.3\n")
    (source / "python" / "kefu" / "__init__.py").write_text('"""kefu"""\n')
    paths = build_layer.LayerPaths(source=source, build=tmp_path / ".build")
    return paths


def test_the_layer_is_built_for_the_runtime_and_architecture_the_functions_use() -> None:
    assert LAMBDA_RUNTIME.name.removeprefix("python") == build_layer.PYTHON_VERSION
    assert LAMBDA_ARCHITECTURE.name == "arm64"
    assert "aarch64" in build_layer.PLATFORM
    assert "--only-binary=:all:" in build_layer.PIP_TARGET_OPTIONS


def test_a_second_build_with_nothing_changed_does_nothing(layer_source: Any) -> None:
    pip = RecordingInstaller()
    build_layer.build(layer_source, install=pip)

    assert build_layer.build(layer_source, install=pip) == "up to date"
    assert pip.runs == 1
    assert (layer_source.layer / "python" / "kefu" / "__init__.py").is_file()


def test_a_source_change_copies_kefu_again_but_keeps_the_wheels(layer_source: Any) -> None:
    pip = RecordingInstaller()
    build_layer.build(layer_source, install=pip)
    (layer_source.package / "replies.py").write_text("GREETING = 'hi'\n")
    (layer_source.package / "__pycache__").mkdir()
    (layer_source.package / "__pycache__" / "replies.cpython-311.pyc").write_bytes(b"\0")

    assert build_layer.build(layer_source, install=pip) == "copied kefu (dependencies unchanged)"
    assert pip.runs == 1
    built = layer_source.layer / "python" / "kefu"
    assert (built / "replies.py").read_text() == "GREETING = 'hi'\n"
    assert not (built / "__pycache__").exists()


def test_a_requirements_change_reinstalls_the_wheels(layer_source: Any) -> None:
    pip = RecordingInstaller()
    build_layer.build(layer_source, install=pip)
    layer_source.requirements.write_text("pydantic==2.14.4\n")

    build_layer.build(layer_source, install=pip)

    assert pip.runs == 2
    assert (layer_source.layer / "python" / "pydantic" / "__init__.py").read_text() == (
        "pydantic==2.14.4\n"
    )


def test_a_failed_install_leaves_no_layer_that_looks_current(layer_source: Any) -> None:
    build_layer.build(layer_source, install=RecordingInstaller())
    layer_source.requirements.write_text("pydantic==9.9.9\n")

    def broken_pip(requirements: Path, site_dir: Path) -> None:
        raise RuntimeError("no such version")

    with pytest.raises(RuntimeError):
        build_layer.build(layer_source, install=broken_pip)

    assert not layer_source.stamp.exists()
    assert build_layer.build(layer_source, install=RecordingInstaller()) != "up to date"


def test_synth_without_a_built_layer_says_to_run_make_layer(tmp_path: Path) -> None:
    with pytest.raises(SharedLayerMissingError, match="make layer"):
        SharedLayer(Stack(App(), "NoLayer"), "SharedLayer", layer_dir=tmp_path / "layer")
