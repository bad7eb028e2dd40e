"""Reverse-step distributions p(x_{t-1} | x_t): what every process's reverse step returns."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from vardbio.processes.projection import Projection


class StepDistribution(ABC):
    """The law of the next state given the current one, for a batch of B chains."""

    @abstractmethod
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw without gradient, shape (B, ...)."""

    @abstractmethod
    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw through which gradients reach the parameters, (B, ...)."""

    @abstractmethod
    def log_prob(self, x_prev: torch.Tensor) -> torch.Tensor:
        """log density of x_prev (B, ...) summed over the event, shape (B,)."""

    @abstractmethod
    def kl(self, other: "StepDistribution") -> torch.Tensor:
        """KL(self || other) per chain, shape (B,)."""


class GaussianStep(StepDistribution):
    """N(mean, std² I) restricted to the subspace a Projection defines.

    mean: (B, ...); std: σ_t, a float shared by the batch (the same for the fine-tuned and
    the reference model, so KL = ||μ_θ - μ_ref||² / (2σ²) summed over the event).
    projection: masks padding and removes the centre of mass where the process asks; the
    density is over its degrees of freedom.
    """

    def __init__(self, mean: torch.Tensor, std: float, projection: Projection):
        self.mean = mean
        self.std = float(std)
        self.projection = projection

    def _require_noise(self, what: str) -> None:
        if self.std <= 0.0:
            raise ValueError(
                f"{what} is undefined for a deterministic step (σ = 0, DDIM with eta = 0); "
                "use eta > 0"
            )

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(generator)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.std == 0.0:
            return self.mean
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                            device=self.mean.device)
        return self.mean + self.std * self.projection(noise)

    def log_prob(self, x_prev: torch.Tensor) -> torch.Tensor:
        self._require_noise("log_prob")
        diff = self.projection(x_prev - self.mean)
        sq = diff.pow(2).flatten(1).sum(1)
        dof = self.projection.degrees_of_freedom(self.mean)
        return -0.5 * sq / self.std**2 - dof * (math.log(self.std) + 0.5 * math.log(2 * math.pi))

    def kl(self, other: StepDistribution) -> torch.Tensor:
        if not isinstance(other, GaussianStep):
            raise TypeError(f"KL between GaussianStep and {type(other).__name__} is not defined")
        self._require_noise("KL")
        other._require_noise("KL")
        dof = self.projection.degrees_of_freedom(self.mean)
        sq = self.projection(self.mean - other.mean).pow(2).flatten(1).sum(1)
        ratio = self.std**2 / other.std**2
        return 0.5 * (dof * (ratio - 1 - math.log(ratio)) + sq / other.std**2)
