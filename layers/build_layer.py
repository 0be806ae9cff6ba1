"""Build the shared Lambda layer into .build/layer/python without Docker.

The layer's third-party wheels are installed for the Lambda target (Python 3.12 on arm64) with
pip's cross-platform options, what nothing imports is pruned, then the `kefu` package is copied
next to them. A stamp records a digest of every input, so an unchanged tree is left alone and a
second build returns at once; when only the `kefu` sources changed, the wheels are kept and only
the package is copied again.

Every module is compiled to bytecode by a Python 3.12 interpreter (found on PATH or under pyenv,
or named by KEFU_LAYER_PYTHON), as unchecked-hash .pyc files: /opt is read-only in Lambda, so a
layer without them makes every cold start compile every module it imports from source (about
three times the import time here), and the zip's fixed timestamps would invalidate
timestamp-checked ones. Without a 3.12 interpreter the layer is built without them, and says so.

Usage: python layers/build_layer.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
# What the requirements pull in that nothing in Lambda imports: opensearch-py's gRPC transport
# (opensearch-protobufs, grpcio, protobuf; about 20 MB), numpy's own test suites (about 16 MB
# with their bytecode) and type stubs. tests/infra/test_cdk_layer_build.py imports and builds
# every handler with the first three's modules blocked.
PRUNED = (
    "numpy/**/tests",
    "**/*.pyi",
    "grpc",
    "grpcio-*.dist-info",
    "google/protobuf",
    "google/_upb",
    "protobuf-*.dist-info",
    "opensearch/protobufs",
    "opensearch_protobufs-*.dist-info",
)
PRUNED_MODULES = ("grpc", "google.protobuf", "opensearch.protobufs")
# The AWS services the functions call: botocore's models of the other four hundred and fifty
# (about 28 MB) are pruned. Fewer folders also make botocore's first service lookup, which
# lists them all, cheaper on each cold start. tests/infra/test_cdk_layer_build.py finds every
# client the code makes and checks that its service is here.
BOTOCORE_SERVICES = frozenset(
    {
        "bedrock-runtime",
        "dynamodb",
        "s3",
        "sagemaker-runtime",
        "secretsmanager",
        "sns",
        "sqs",
        "sts",  # botocore's assume-role credential providers
    }
)
# Where the layer is mounted in Lambda: the paths compiled into the bytecode (tracebacks).
LAMBDA_SITE_DIR = "/opt/python"
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


def target_python() -> str | None:
    """A Python 3.12 interpreter to compile the layer's bytecode with, or None."""
    candidates = [os.environ.get("KEFU_LAYER_PYTHON"), shutil.which(f"python{PYTHON_VERSION}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        str(path)
        for path in pyenv_root.glob(f"versions/{PYTHON_VERSION}*/bin/python{PYTHON_VERSION}")
    )
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                check=False,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip() == PYTHON_VERSION:
            return candidate
    return None


class BytecodeError(RuntimeError):
    """The layer's bytecode was not written."""


def compile_bytecode(python: str, folder: Path, site_dir: Path) -> None:
    """Compile every module under `folder` (inside `site_dir`) with `python`, as unchecked-hash
    .pyc files naming their /opt/python paths. A file that does not compile (a vendored
    Python 2 test, say) is left as source: compileall's status is not an error here, but kefu
    without its bytecode is."""
    subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(site_dir),
            "-p",
            LAMBDA_SITE_DIR,
            str(folder),
        ],
        check=False,
    )
    tag = "cpython-" + PYTHON_VERSION.replace(".", "")
    witness = site_dir / "kefu" / "__pycache__" / f"__init__.{tag}.pyc"
    if (site_dir / "kefu" / "__init__.py").is_file() and not witness.is_file():
        raise BytecodeError(f"{python} compiled no bytecode for kefu ({witness} is missing)")


def prune(site_dir: Path) -> None:
    """Remove what `PRUNED` names, and folders it leaves empty, and botocore's models of the
    services outside `BOTOCORE_SERVICES`."""
    models = site_dir / "botocore" / "data"
    if models.is_dir():
        for service in models.iterdir():
            if service.is_dir() and service.name not in BOTOCORE_SERVICES:
                shutil.rmtree(service)
    for pattern in PRUNED:
        for path in list(site_dir.glob(pattern)):
            if not path.exists():  # inside a folder pruned before it
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            parent = path.parent
            if parent != site_dir and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def dependencies_digest(requirements: Path, python: str | None = None) -> str:
    """What decides the installed wheels: the requirements, the pip target, this script and
    whether bytecode is compiled."""
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(b"bytecode" if python else b"sources only")
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
    python: str | None = None,
) -> str:
    """Bring the layer folder up to date; return what was done. `python`, a Python 3.12
    interpreter, compiles the bytecode; without it the layer holds sources only."""
    for required in (paths.requirements, paths.package):
        if not required.exists():
            raise SystemExit(f"build_layer: {required} is missing")

    wanted = {
        "dependencies": dependencies_digest(paths.requirements, python),
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
        prune(staging / "python")
        _copy_package(paths, staging / "python")
        if python:
            compile_bytecode(python, staging / "python", staging / "python")
        shutil.rmtree(paths.layer, ignore_errors=True)
        staging.rename(paths.layer)
        action = "installed dependencies and copied kefu"
    else:
        _copy_package(paths, site_dir)
        if python:
            compile_bytecode(python, site_dir / "kefu", site_dir)
        action = "copied kefu (dependencies unchanged)"

    paths.stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    return action


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the shared Lambda layer without Docker.")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    python = target_python()
    action = build(force=args.force, python=python)
    elapsed = time.perf_counter() - started
    print(f"layer: {action} in {elapsed:.1f}s -> {DEFAULT_PATHS.layer.relative_to(ROOT)}")
    if python is None:
        print(
            f"layer: no Python {PYTHON_VERSION} found (PATH, pyenv, KEFU_LAYER_PYTHON): built "
            "without bytecode, so each cold start in Lambda compiles what it imports"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
