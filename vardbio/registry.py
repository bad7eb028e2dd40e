"""Plugins: models, oracles and algorithms found through Python entry points.

Built-in plugins register exactly as a third-party package would, in the groups
`vardbio.models`, `vardbio.oracles` and `vardbio.algorithms` of its pyproject.toml. An
oracle entry point names an Oracle class, a factory returning an Oracle, or a plain
function of one design (see vardbio.function_oracle).
"""
from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

GROUPS = {"model": "vardbio.models", "oracle": "vardbio.oracles", "algorithm": "vardbio.algorithms"}


class UnknownPluginError(ValueError):
    """A name that no installed plugin registers."""


def available(kind: str) -> list[str]:
    """Sorted names registered for a kind ('model', 'oracle' or 'algorithm')."""
    return sorted({ep.name for ep in entry_points(group=_group(kind))})


def load(kind: str, name: str) -> Any:
    """The object registered under `name` for `kind`; an unknown name lists the valid ones.
    A plain function registered as an oracle comes back as a factory of Oracles
    (vardbio.function_oracle.RegisteredFunction), like an Oracle class."""
    matches = [ep for ep in entry_points(group=_group(kind)) if ep.name == name]
    if not matches:
        valid = ", ".join(available(kind)) or "none installed"
        raise UnknownPluginError(f"unknown {kind} '{name}'; available: {valid}")
    obj = matches[0].load()
    if kind == "oracle" and inspect.isfunction(obj):
        from vardbio.function_oracle import RegisteredFunction
        return RegisteredFunction(name, obj)
    return obj


def _group(kind: str) -> str:
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind '{kind}'; expected one of {sorted(GROUPS)}")
    return GROUPS[kind]
