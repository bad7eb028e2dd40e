"""Plain functions registered as oracles.

An entry point in the group `vardbio.oracles` may name a plain function of one design
instead of an Oracle class:

    [project.entry-points."vardbio.oracles"]
    my_score = "my_pkg.scores:my_score"       # def my_score(design, scale=1.0) -> float

`vardbio.registry.load("oracle", "my_score")` then returns a `RegisteredFunction`: called
with a reward term's params, it builds a `BoundFunctionOracle` named after the entry point
that scores `my_score(design, **params)`, with the params in its cache identity. Raising (or
returning NaN) fails a design, as for any oracle. A function whose parameters are all
given by the params (or have defaults) is a factory instead: it is called with them and
must return an Oracle.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from vardbio.reward.oracle import FunctionOracle, Oracle

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class BoundFunctionOracle(FunctionOracle):
    """fn(design, **params) -> float as an oracle named `name`; params are part of the cache
    identity (a changed function needs another name or version)."""

    def __init__(self, fn: Callable[..., float], name: str, params: dict[str, Any] | None = None,
                 version: str = "1"):
        super().__init__(fn, name=name, version=version)
        self.bound = dict(params or {})

    def params(self) -> dict[str, Any]:
        return dict(self.bound)

    def score_one(self, design: Any) -> float:
        return self.fn(design, **self.bound)


class RegisteredFunction:
    """The factory registry.load returns for a plain function registered as oracle `name`."""

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name, self.fn = name, fn
        self.signature = inspect.signature(fn)

    def __call__(self, **params: Any) -> Oracle:
        where = f"oracle '{self.name}' (the function {self.fn.__module__}.{self.fn.__qualname__}{self.signature})"
        parameters = list(self.signature.parameters.values())
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        unknown = sorted(set(params) - {p.name for p in parameters if p.kind not in _POSITIONAL[:1]})
        if unknown and not takes_any:
            raise TypeError(f"{where} has no parameter(s) {unknown}")
        missing = [p for p in parameters if p.default is p.empty and p.name not in params
                   and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if not missing:  # a factory: its settings all come from the params
            oracle = self.fn(**params)
            if not isinstance(oracle, Oracle):
                raise ValueError(f"{where} returned a {type(oracle).__name__}, not an Oracle; a scoring "
                                 f"function takes the design as its first parameter, without a default")
            return oracle
        if len(missing) == 1 and missing[0] is parameters[0] and missing[0].kind in _POSITIONAL:
            return BoundFunctionOracle(self.fn, self.name, params)
        raise ValueError(f"{where} needs {[p.name for p in missing]}: register a function of one design "
                         f"(fn(design, **params) -> float) whose other parameters come from the reward "
                         f"term's params, an Oracle class, or a factory returning an Oracle")
