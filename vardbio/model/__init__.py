"""Diffusion models: denoiser + process + decode, rollouts, reference copies, checkpoints, and
the plugin seams (ModelPlugin; the evaluation a plugin summarises, vardbio.model.evaluation)."""
from vardbio.model.checkpoint import CheckpointMismatchError, load_weights, read_checkpoint, save_model
from vardbio.model.diffusion import DiffusionModel, Layout, Trajectory, path_kl
from vardbio.model.evaluation import DomainSummary, EvaluatedDesigns, Evaluation, EvaluationOracles, Metric
from vardbio.model.plugin import ModelPlugin, split_options

__all__ = [
    "CheckpointMismatchError", "DiffusionModel", "DomainSummary", "EvaluatedDesigns", "Evaluation",
    "EvaluationOracles", "Layout", "Metric", "ModelPlugin", "Trajectory", "load_weights", "path_kl",
    "read_checkpoint", "save_model", "split_options",
]
