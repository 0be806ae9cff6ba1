"""`layers/build_layer.py` of a checkout, loaded as a module: layers/ is not a package, and the
Makefile runs the script by its path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_build_layer(root: Path, name: str = "build_layer") -> ModuleType:
    """The build script of the checkout at `root`, as module `name`."""
    spec = importlib.util.spec_from_file_location(name, root / "layers" / "build_layer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module
