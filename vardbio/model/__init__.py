"""Diffusion models: denoiser + process + decode, rollouts, reference copies, checkpoints."""
from vardbio.model.checkpoint import CheckpointMismatchError, load_weights, read_checkpoint, save_model
from vardbio.model.diffusion import DiffusionModel, Layout, Trajectory, path_kl
from vardbio.model.plugin import ModelPlugin, split_options

__all__ = [
    "CheckpointMismatchError", "DiffusionModel", "Layout", "ModelPlugin", "Trajectory",
    "load_weights", "path_kl", "read_checkpoint", "save_model", "split_options",
]
