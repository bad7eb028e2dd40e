"""The `ring_angle` oracle: how closely a point's direction matches a target angle."""
from __future__ import annotations

import math
from typing import Any

from vardbio.reward import OracleError, PerDesignOracle


class AngleScore(PerDesignOracle):
    """cos(angle(x, y) - target): 1 at the target direction, -1 opposite it.

    Designs are {"x": float, "y": float} dictionaries (what the ring model decodes to); the
    origin has no angle and fails with a reason.
    """

    name = "ring_angle"
    version = "1"
    higher_is_better = True

    def __init__(self, target_degrees: float = 0.0):
        self.target = math.radians(float(target_degrees))

    def params(self) -> dict[str, Any]:
        return {"target": self.target}

    def design_key(self, design: Any) -> str:
        return f"{float(design['x']):.9g},{float(design['y']):.9g}"

    def score_one(self, design: Any) -> float:
        x, y = float(design["x"]), float(design["y"])
        if not (math.isfinite(x) and math.isfinite(y)) or x == y == 0.0:
            raise OracleError(f"no angle for the point ({x}, {y})")
        return math.cos(math.atan2(y, x) - self.target)
