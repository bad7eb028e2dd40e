"""Transforms that map a raw oracle score onto the scale a reward term uses.

Every transform is elementwise on a float array, keeps NaN as NaN, and is built from a plain
dict with `build_transform({"type": "sigmoid", "center": -8, "scale": -1})`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np


class Transform(ABC):
    """Base class: `__call__(x) -> y`, x and y (n,) float64 arrays, NaN preserved."""

    kind: str = ""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            y = self._apply(x)
        return np.where(np.isnan(x), np.nan, y)

    @abstractmethod
    def _apply(self, x: np.ndarray) -> np.ndarray:
        """The transform on a float array (NaN entries are restored afterwards)."""

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}

    @property
    def direction(self) -> int:
        """1 if y never falls as x rises, -1 if it never rises, 0 if neither (a window) or
        not known."""
        return 0


@dataclass
class Identity(Transform):
    """y = x."""

    kind = "identity"

    direction = 1

    def _apply(self, x):
        return x


@dataclass
class Linear(Transform):
    """Linear normalisation: y = (x - low) / (high - low), so low -> 0 and high -> 1.

    low > high is allowed and maps a lower-is-better score (a Vina energy: low=-4, high=-12)
    onto higher-is-better. clip: clip y to [0, 1].
    """

    low: float
    high: float
    clip: bool = True
    kind = "linear"

    def __post_init__(self):
        if self.low == self.high:
            raise ValueError(f"linear transform needs low != high, got {self.low}")

    @property
    def direction(self) -> int:
        return 1 if self.high > self.low else -1

    def _apply(self, x):
        y = (x - self.low) / (self.high - self.low)
        return np.clip(y, 0.0, 1.0) if self.clip else y


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow


@dataclass
class Sigmoid(Transform):
    """y = 1 / (1 + exp(-(x - center) / scale)); a negative scale rewards low scores."""

    center: float
    scale: float
    kind = "sigmoid"

    def __post_init__(self):
        if self.scale == 0:
            raise ValueError("sigmoid transform needs a non-zero scale")

    @property
    def direction(self) -> int:
        return 1 if self.scale > 0 else -1

    def _apply(self, x):
        return _sigmoid((x - self.center) / self.scale)


@dataclass
class DoubleSigmoid(Transform):
    """A soft window: y = sigmoid((x - low) / scale_low) * sigmoid((high - x) / scale_high).

    Near 1 for low < x < high and falling to 0 outside (a molecular-weight window, say).
    """

    low: float
    high: float
    scale_low: float = 1.0
    scale_high: float = 1.0
    kind = "double_sigmoid"

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"double_sigmoid needs low < high, got {self.low}, {self.high}")
        if self.scale_low <= 0 or self.scale_high <= 0:
            raise ValueError("double_sigmoid scales must be positive")

    def _apply(self, x):
        return (_sigmoid((x - self.low) / self.scale_low)
                * _sigmoid((self.high - x) / self.scale_high))


@dataclass
class Clip(Transform):
    """y = min(max(x, low), high); either bound may be None."""

    low: float | None = None
    high: float | None = None
    kind = "clip"

    def __post_init__(self):
        if self.low is None and self.high is None:
            raise ValueError("clip transform needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"clip needs low <= high, got {self.low}, {self.high}")

    direction = 1

    def _apply(self, x):
        return np.clip(x, self.low, self.high)


@dataclass
class Threshold(Transform):
    """y = 1 where x >= threshold (or x <= threshold when above=False), else 0."""

    threshold: float
    above: bool = True
    kind = "threshold"

    @property
    def direction(self) -> int:
        return 1 if self.above else -1

    def _apply(self, x):
        return (x >= self.threshold if self.above else x <= self.threshold).astype(np.float64)


TRANSFORMS: dict[str, type[Transform]] = {
    t.kind: t for t in (Identity, Linear, Sigmoid, DoubleSigmoid, Clip, Threshold)
}


def build_transform(cfg: Mapping[str, Any] | Transform | None) -> Transform:
    """A transform from {"type": name, **arguments}; None gives the identity."""
    if cfg is None:
        return Identity()
    if isinstance(cfg, Transform):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ValueError(f"a transform is configured by a mapping with a 'type', got {cfg!r}")
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform type {kind!r}; expected one of {sorted(TRANSFORMS)}")
    try:
        return TRANSFORMS[kind](**cfg)
    except TypeError as err:
        raise ValueError(f"bad arguments for transform '{kind}': {err}") from err
