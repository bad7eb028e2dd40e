"""Noise processes as pure math: schedules, forward noising, reverse-step distributions."""
from vardbio.processes.base import DiffusionProcess
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.processes.joint import JointPart, JointProcess, JointProcessConfig, JointStep, pair_mask
from vardbio.processes.masked import CategoricalStep, MaskedDiffusion, MaskedDiffusionConfig
from vardbio.processes.projection import Projection
from vardbio.processes.schedules import alphas_cumprod, sampling_times
from vardbio.processes.steps import GaussianStep, StepDistribution

__all__ = [
    "CategoricalStep", "MaskedDiffusion", "MaskedDiffusionConfig", "DiffusionProcess", "GaussianProcess", "GaussianProcessConfig", "GaussianStep",
    "JointPart", "JointProcess", "JointProcessConfig", "JointStep",
    "Projection", "StepDistribution", "alphas_cumprod", "pair_mask", "sampling_times",
]
