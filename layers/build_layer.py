"""Build the shared Lambda layer into .build/layer/python without Docker.

The layer's third-party wheels are installed for the Lambda target (Python 3.12 on arm64) with
pip's cross-platform options, then the `kefu` package is copied next to them. A stamp records a
digest of every input, so an unchanged tree is left alone and a second build returns at once;
when only the `kefu` sources changed, the wheels are kept and only the package is copied again.

Usage: python layers/build_layer.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The Lambda target. infra_cdk's LAMBDA_RUNTIME and LAMBDA_ARCHITECTURE must say the same
# (tests/infra checks that they do).
PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_aarch64"
# numpy 2.3 and later publish aarch64 wheels only as manylinux_2_28, which the Lambda Python 3.12
# runtime (Amazon Linux 2023, glibc 2.34) runs.
PIP_TARGET_OPTIONS = (
    "--platform",
    PLATFORM,
    "--platform",
    "manylinux_2_28_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    PYTHON_VERSION,
    "--only-binary=:all:",
)
IGNORED_NAMES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class LayerPaths:
    """Where the layer comes from and where it is built."""

    source: Path  # layers/kefu: requirements.txt and python/kefu/
    build: Path  # .build

    @property
    def requirements(self) -> Path:
        return self.source / "requirements.txt"

    @property
    def package(self) -> Path:
        return self.source / "python" / "kefu"

    @property
    def layer(self) -> Path:
        """The folder the CDK app packages: its `python/` becomes /opt/python in Lambda."""
        return self.build / "layer"

    @property
    def stamp(self) -> Path:
        # Outside the layer folder, so it never becomes part of the asset (or its hash).
        return self.build / "layer.stamp.json"


DEFAULT_PATHS = LayerPaths(source=ROOT / "layers" / "kefu", build=ROOT / ".build")

Installer = Callable[[Path, Path], None]


def _ignored(relative: Path) -> bool:
    return any(part in IGNORED_NAMES for part in relative.parts) or relative.suffix in (
        IGNORED_SUFFIXES
    )


def dependencies_digest(requirements: Path) -> str:
    """What decides the installed wheels: the requirements, the pip target and this script."""
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update("\0".join(PIP_TARGET_OPTIONS).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def sources_digest(paths: LayerPaths) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths.package.rglob("*")):
        relative = path.relative_to(paths.package)
        if path.is_file() and not _ignored(relative):
            digest.update(relative.as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def install_dependencies(requirements: Path, site_dir: Path) -> None:
    """pip-install the requirements' wheels for the Lambda target into `site_dir`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        # .pyc compiled by the build interpreter would be useless on 3.12 and change asset hashes.
        "--no-compile",
        *PIP_TARGET_OPTIONS,
        "--target",
        str(site_dir),
        "--requirement",
        str(requirements),
    ]
    subprocess.run(command, check=True)
    # Console scripts carry a shebang to the build interpreter: useless in Lambda, and their
    # absolute paths would make the layer differ from one checkout to the next.
    shutil.rmtree(site_dir / "bin", ignore_errors=True)


def _copy_package(paths: LayerPaths, site_dir: Path) -> None:
    target = site_dir / "kefu"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        paths.package,
        target,
        ignore=shutil.ignore_patterns(*IGNORED_NAMES, *(f"*{s}" for s in IGNORED_SUFFIXES)),
    )


def _read_stamp(paths: LayerPaths) -> dict[str, str]:
    try:
        data = json.loads(paths.stamp.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def build(
    paths: LayerPaths = DEFAULT_PATHS,
    *,
    force: bool = False,
    install: Installer = install_dependencies,
) -> str:
    """Bring the layer folder up to date; return what was done."""
    for required in (paths.requirements, paths.package):
        if not required.exists():
            raise SystemExit(f"build_layer: {required} is missing")

    wanted = {
        "dependencies": dependencies_digest(paths.requirements),
        "sources": sources_digest(paths),
    }
    stamp = _read_stamp(paths)
    site_dir = paths.layer / "python"
    built = site_dir.is_dir()

    if not force and built and stamp == wanted:
        return "up to date"

    # The stamp goes first and comes back last: an interrupted build is never taken as current.
    paths.stamp.unlink(missing_ok=True)
    if force or not built or stamp.get("dependencies") != wanted["dependencies"]:
        # Build beside the old layer and swap at the end, so a failed pip run never leaves a
        # half-filled layer for the next synth to package.
        staging = paths.build / "layer.partial"
        shutil.rmtree(staging, ignore_errors=True)
        install(paths.requirements, staging / "python")
        _copy_package(paths, staging / "python")
        shutil.rmtree(paths.layer, ignore_errors=True)
        staging.rename(paths.layer)
        action = "installed dependencies and copied kefu"
    else:
        _copy_package(paths, site_dir)
        action = "copied kefu (dependencies unchanged)"

    paths.stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return action


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the shared Lambda layer without Docker.")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    action = build(force=args.force)
    elapsed = time.perf_counter() - started
    print(f"layer: {action} in {elapsed:.1f}s -> {DEFAULT_PATHS.layer.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
