"""The shared layer is built without Docker, for the Lambda target, and only when inputs change."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack

from infra_cdk.assets import REPO_ROOT
from infra_cdk.constructs.service_function import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from infra_cdk.constructs.shared_layer import SharedLayer, SharedLayerMissingError
from tests.layer_script import load_build_layer

build_layer = load_build_layer(REPO_ROOT)


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


def test_what_nothing_imports_is_pruned_and_empty_folders_with_it(tmp_path: Path) -> None:
    site = tmp_path / "python"
    for folder in (
        "grpc",
        "grpcio-1.85.4.dist-info",
        "google/protobuf",
        "google/_upb",
        "opensearch/protobufs",
        "numpy/_core/tests",
        "numpy/_core",
        "opensearchpy",
    ):
        (site / folder).mkdir(parents=True, exist_ok=True)
        (site / folder / "__init__.py").write_text("")
    (site / "numpy" / "__init__.pyi").write_text("")

    build_layer.prune(site)

    assert sorted(path.name for path in site.iterdir()) == ["numpy", "opensearchpy"]
    assert not (site / "numpy" / "_core" / "tests").exists()
    assert (site / "numpy" / "_core" / "__init__.py").is_file()
    assert not (site / "numpy" / "__init__.pyi").exists()


def test_botocore_keeps_the_models_of_the_services_called_and_no_others(tmp_path: Path) -> None:
    models = tmp_path / "python" / "botocore" / "data"
    for service in ("dynamodb", "sqs", "ec2", "iot"):
        (models / service / "2012-08-10").mkdir(parents=True)
        (models / service / "2012-08-10" / "service-2.json.gz").write_bytes(b"")
    (models / "endpoints.json").write_text("{}")

    build_layer.prune(tmp_path / "python")

    assert sorted(path.name for path in models.iterdir()) == ["dynamodb", "endpoints.json", "sqs"]


# How the code makes AWS clients: boto3 itself, the project's runtime clients, and Powertools'
# utilities, each of which makes its own.
_CLIENT_CALLS = re.compile(r"""(?:boto3\.client|runtime_client)\(\s*["']([a-z0-9-]+)["']""")
_POWERTOOLS_CLIENTS = {
    "SecretsProvider": "secretsmanager",
    "SSMProvider": "ssm",
    "AppConfigProvider": "appconfigdata",
    "DynamoDBProvider": "dynamodb",
    "DynamoDBPersistenceLayer": "dynamodb",
}


def test_every_service_the_functions_call_keeps_its_botocore_model() -> None:
    called: dict[str, set[str]] = {}
    for folder in ("layers/kefu/python", "functions", "kb_ingest"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            text = source.read_text()
            services = set(_CLIENT_CALLS.findall(text))
            services |= {name for key, name in _POWERTOOLS_CLIENTS.items() if key in text}
            for service in services:
                called.setdefault(service, set()).add(str(source.relative_to(REPO_ROOT)))

    # The scan finds what it must: the chat turn's clients among them.
    assert {"bedrock-runtime", "dynamodb", "secretsmanager", "sqs"} <= called.keys()
    missing = {service: sorted(files) for service, files in called.items()}
    missing = {s: f for s, f in missing.items() if s not in build_layer.BOTOCORE_SERVICES}
    assert not missing, f"add these to BOTOCORE_SERVICES in layers/build_layer.py: {missing}"


def test_botocore_makes_every_kept_client_from_the_pruned_models(tmp_path: Path) -> None:
    import subprocess

    import botocore

    site = tmp_path / "python"
    shutil.copytree(Path(botocore.__file__).parent, site / "botocore")
    build_layer.prune(site)
    services = sorted(build_layer.BOTOCORE_SERVICES)
    script = (
        "import botocore, botocore.session\n"
        f"assert botocore.__file__.startswith({str(site)!r}), botocore.__file__\n"
        "session = botocore.session.get_session()\n"
        f"for name in {services!r}:\n"
        "    session.create_client(name, region_name='us-east-1')\n"
        "print(len(session.get_available_services()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **_FAKE_CREDENTIALS},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == len(services)


_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE00",
    "AWS_SECRET_ACCESS_KEY": "example",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def test_the_layer_ships_bytecode_lambdas_python_uses_without_checking_sources(
    layer_source: Any,
) -> None:
    python = build_layer.target_python()
    if python is None:
        pytest.skip(f"no Python {build_layer.PYTHON_VERSION} here to compile the layer with")
    (layer_source.package / "replies.py").write_text("GREETING = 'hi'\n")

    def install(requirements: Path, site_dir: Path) -> None:
        (site_dir / "pydantic").mkdir(parents=True)
        (site_dir / "pydantic" / "__init__.py").write_text("VERSION = '2.14.3'\n")

    build_layer.build(layer_source, install=install, python=python)

    site = layer_source.layer / "python"
    tag = "cpython-" + build_layer.PYTHON_VERSION.replace(".", "")
    for module in (site / "kefu" / "replies.py", site / "pydantic" / "__init__.py"):
        compiled = module.parent / "__pycache__" / f"{module.stem}.{tag}.pyc"
        header = compiled.read_bytes()[:16]
        # PEP 552: flags 0b01, a hash-based .pyc that the interpreter does not check against
        # its source (the zip gives every file the same timestamp in Lambda).
        assert int.from_bytes(header[4:8], "little") == 0b01, module
    # A change to kefu alone compiles kefu again.
    (layer_source.package / "replies.py").write_text("GREETING = 'hello'\n")
    build_layer.build(layer_source, install=install, python=python)
    pyc = site / "kefu" / "__pycache__" / f"replies.{tag}.pyc"
    assert b"hello" in pyc.read_bytes()


def test_a_compile_that_writes_no_bytecode_for_kefu_fails_the_build(
    layer_source: Any, tmp_path: Path
) -> None:
    # An "interpreter" that runs and writes nothing.
    fake = tmp_path / "python3.12"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)

    with pytest.raises(build_layer.BytecodeError, match="no bytecode"):
        build_layer.build(layer_source, install=RecordingInstaller(), python=str(fake))
    assert not layer_source.stamp.exists()


def test_the_handlers_import_and_build_without_what_the_layer_prunes() -> None:
    import subprocess

    from tests.lambda_env import DEPLOYED_CHAT

    blocked = ", ".join(repr(name) for name in build_layer.PRUNED_MODULES)
    script = (
        f"import sys\nfor name in ({blocked},):\n    sys.modules[name] = None\n"
        "import functions.chat.handler, functions.escalation.handler, functions.export.handler\n"
        "import functions.ingest.handler, functions.ingest.upgrade\n"
        "from kefu.bootstrap import get_chat_service\nget_chat_service()\n"
        "import opensearchpy.helpers\nprint('ok')\n"
    )
    path = f"{REPO_ROOT / 'layers' / 'kefu' / 'python'}:{REPO_ROOT}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**DEPLOYED_CHAT, "PATH": "/usr/bin:/bin", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
