"""Saving and loading DiffusionModel weights together with the spec that built them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vardbio.model.diffusion import DiffusionModel

FORMAT = "vardbio-model-1"


class CheckpointMismatchError(ValueError):
    """A checkpoint made for another model (different plugin or architecture)."""


def save_model(model: DiffusionModel, path: str | Path, **extra: Any) -> Path:
    """Write weights, spec and `extra` metadata (e.g. training metrics) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "spec": model.spec, "state_dict": model.state_dict(),
                "extra": extra}, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path} is not a vardbio model checkpoint")
    return blob


def load_weights(model: DiffusionModel, path: str | Path) -> DiffusionModel:
    """Load weights into `model`, refusing a checkpoint whose spec differs."""
    return apply_weights(model, read_checkpoint(path), path)


def apply_weights(model: DiffusionModel, blob: dict[str, Any], source: str | Path) -> DiffusionModel:
    """load_weights for a checkpoint already read with read_checkpoint (`source` names it)."""
    if blob["spec"] != model.spec:
        raise CheckpointMismatchError(
            f"checkpoint {source} was made for model {blob['spec']}, not {model.spec}"
        )
    model.load_state_dict(blob["state_dict"])
    return model
