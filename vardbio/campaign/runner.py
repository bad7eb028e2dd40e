"""`run_campaign(config)`: the run of a config, as `vardbio run` does it.

It is `Trainer.from_config(config).train()` (vardbio.campaign.trainer holds the loop); kept
for code that composes a config and runs it in one call.
"""
from __future__ import annotations

from typing import Any, Callable

from vardbio.campaign.config import RunConfig
from vardbio.campaign.distributed import Distributed
from vardbio.campaign.trainer import ResumeMismatchError, Trainer

__all__ = ["ResumeMismatchError", "run_campaign"]


def run_campaign(config: RunConfig | Any,
                 on_iteration: Callable[[int, dict[str, float]], None] | None = None,
                 dist: Distributed | None = None) -> dict[str, Any]:
    """Run (or resume) the campaign a RunConfig (or a composed config) describes and return
    its summary; see Trainer.train."""
    return Trainer.from_config(config, dist=dist).train(on_iteration)
