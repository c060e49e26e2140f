"""Public modules declare ``__all__`` naming what exists; imports point down the layers."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import genesis

SRC = Path(genesis.__file__).parent


def _modules() -> list[str]:
    infos = pkgutil.walk_packages([str(SRC)], prefix="genesis.")
    return sorted(["genesis", *(info.name for info in infos)])


@pytest.mark.parametrize("name", _modules())
def test_public_module_declares_all(name: str) -> None:
    if name.rsplit(".", 1)[-1].startswith("_") and not name.endswith("__main__"):
        return
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name.endswith("__main__") or (
        name.count(".") == 1
        and not exported
        and SRC.joinpath(*name.split(".")[1:], "__init__.py").exists()
    ):
        return
    assert exported is not None, f"{name} has no __all__"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names missing {item!r}"


# Which genesis packages each layer may import (ARCHITECTURE.md §3, STYLE.md §2).
_BASE = {"genesis.models", "genesis.errors", "genesis.config", "genesis.money", "genesis.clock"}
ALLOWED: dict[str, set[str]] = {
    "genesis.models": {"genesis.models", "genesis.errors"},
    "genesis.errors": set(),
    "genesis.config": {"genesis.config", "genesis.errors"},
    "genesis.resilience": _BASE | {"genesis.resilience"},
    "genesis.bus": _BASE,
    "genesis.sim": {
        "genesis.models",
        "genesis.errors",
        "genesis.exchange.endpoints",
        "genesis.sim",
    },
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genesis"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genesis"))
    return found


def _layer(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def _is_allowed(target: str, allowed: set[str]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def test_imports_point_down_the_layers() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        module = "genesis." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        layer = _layer(module.removesuffix(".__init__"))
        if layer is None:
            continue
        problems += [
            f"{module} imports {target}"
            for target in _imports(path)
            if not _is_allowed(target, ALLOWED[layer])
        ]
    assert not problems, "\n".join(problems)
