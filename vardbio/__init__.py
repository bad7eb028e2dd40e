"""vardbio: fine-tune diffusion models toward oracle rewards with VARD.

    import vardbio
    trainer = vardbio.Trainer("toy", my_score, vardbio.VARDConfig(beta=0.5), out_dir="runs/x")
    summary = trainer.train()

The names below are imported on first use, so `import vardbio` stays fast (torch and the
rest load when a name that needs them is touched).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Trainer": "vardbio.campaign.trainer",
    "VARDConfig": "vardbio.algorithms.vard",
    "DDPOConfig": "vardbio.algorithms.ddpo",
    "BestOfNConfig": "vardbio.algorithms.best_of_n",
    "FunctionOracle": "vardbio.reward.oracle",
    "Oracle": "vardbio.reward.oracle",
    "Reward": "vardbio.reward.reward",
    "RewardTerm": "vardbio.reward.reward",
}
_MODULES = ("registry",)

__all__ = ["__version__", *_EXPORTS, *_MODULES]

if TYPE_CHECKING:
    from vardbio import registry
    from vardbio.algorithms.best_of_n import BestOfNConfig
    from vardbio.algorithms.ddpo import DDPOConfig
    from vardbio.algorithms.vard import VARDConfig
    from vardbio.campaign.trainer import Trainer
    from vardbio.reward.oracle import FunctionOracle, Oracle
    from vardbio.reward.reward import Reward, RewardTerm


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _installed_version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"vardbio.{name}")
    else:
        raise AttributeError(f"module 'vardbio' has no attribute '{name}'")
    globals()[name] = value
    return value


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vardbio")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
