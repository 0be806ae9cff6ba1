"""The ingest function's asset, bundled on this machine without Docker.

The ingest Lambda runs `kb_ingest` (a top-level package, not part of the shared layer) and the
parsers its loaders use. CDK calls `IngestFunctionBundler` while it stages the asset; it fills the
output folder with:

- `handler.py` and `upgrade.py` from functions/ingest/,
- the `kb_ingest` package, without its sample knowledge base,
- the wheels of functions/ingest/requirements.txt for the Lambda target (Python 3.12 on arm64),
  with the shared layer's pip target options (layers/build_layer.py).

The wheels are installed once into .build/ingest-deps and kept while the requirements and the pip
target stay the same (a stamp records their digest), so only the first synth on a checkout needs
PyPI; every later one is offline and copies files.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

from infra_cdk.assets import INGEST_FUNCTION_DIR, REPO_ROOT

INGEST_REQUIREMENTS = INGEST_FUNCTION_DIR / "requirements.txt"
KB_INGEST_DIR = REPO_ROOT / "kb_ingest"
INGEST_DEPENDENCIES_DIR = REPO_ROOT / ".build" / "ingest-deps"
_STAMP = REPO_ROOT / ".build" / "ingest-deps.stamp.json"
_IGNORED = ("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".mypy_cache", ".DS_Store")
# Data for the local stack and the evaluation, not for the Lambda.
_KB_INGEST_EXCLUDED = ("sample_kb",)


@cache
def _build_layer() -> ModuleType:
    """layers/build_layer.py, the one place that names the Lambda target for pip."""
    # layers/ is not a package: load the script the way the Makefile runs it.
    spec = importlib.util.spec_from_file_location(
        "kefu_build_layer", REPO_ROOT / "layers" / "build_layer.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError("layers/build_layer.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def ensure_ingest_dependencies() -> Path:
    """The folder with the ingest function's wheels for the Lambda target, installed if needed.

    Several synths may run at once (parallel test workers): a file lock makes one install and
    the others wait and reuse it.
    """
    _STAMP.parent.mkdir(parents=True, exist_ok=True)
    with (_STAMP.parent / "ingest-deps.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_ingest_dependencies_locked()


def _ensure_ingest_dependencies_locked() -> Path:
    # The layer builder's pip step installs them: its digest covers what decides the wheels.
    wanted: str = _build_layer().dependencies_digest(INGEST_REQUIREMENTS)
    try:
        current = json.loads(_STAMP.read_text()).get("dependencies")
    except (OSError, ValueError, AttributeError):
        current = None
    if current == wanted and INGEST_DEPENDENCIES_DIR.is_dir():
        return INGEST_DEPENDENCIES_DIR

    _STAMP.unlink(missing_ok=True)
    # Installed beside the old folder and swapped in at the end: an interrupted pip run never
    # leaves a half-filled folder for the next synth to package.
    staging = Path(tempfile.mkdtemp(prefix="ingest-deps.", dir=_STAMP.parent))
    try:
        _build_layer().install_dependencies(INGEST_REQUIREMENTS, staging)
        shutil.rmtree(INGEST_DEPENDENCIES_DIR, ignore_errors=True)
        staging.rename(INGEST_DEPENDENCIES_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _STAMP.write_text(json.dumps({"dependencies": wanted}, indent=2) + "\n")
    return INGEST_DEPENDENCIES_DIR


def fill_ingest_asset(output_dir: Path) -> None:
    """Write the ingest function's code and its dependencies into `output_dir`."""
    shutil.copytree(ensure_ingest_dependencies(), output_dir, dirs_exist_ok=True)
    for module in ("handler.py", "upgrade.py"):
        shutil.copy2(INGEST_FUNCTION_DIR / module, output_dir / module)
    shutil.copytree(
        KB_INGEST_DIR,
        output_dir / "kb_ingest",
        ignore=shutil.ignore_patterns(*_IGNORED, *_KB_INGEST_EXCLUDED),
    )


@jsii.implements(ILocalBundling)
class IngestFunctionBundler:
    """CDK's local bundling hook: it always bundles here, so Docker is never asked for."""

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        fill_ingest_asset(Path(output_dir))
        return True


def ingest_bundling() -> BundlingOptions:
    # The image is required by the type but never used: the local bundler always succeeds.
    return BundlingOptions(
        image=DockerImage.from_registry("scratch"), local=IngestFunctionBundler()
    )


if __name__ == "__main__":
    print(f"ingest dependencies: {ensure_ingest_dependencies()}")
