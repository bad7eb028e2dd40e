"""The interface every noise process implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch

from vardbio.processes.steps import StepDistribution

Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""denoiser(x_t (B, ...), t (B,) in [0, 1], mask (B, N) or None) -> output (B, ...)."""


class DiffusionProcess(ABC):
    """A forward noising process and its parameterised reverse steps.

    A sampler visits `num_steps + 1` states: state 0 is drawn from the prior, state k+1 from
    `step(denoiser output at state k)`. `time(k)` is the noise level of state k in [0, 1]
    (1 = pure noise), the time the denoiser and value heads are conditioned on.
    """

    @property
    @abstractmethod
    def num_steps(self) -> int:
        """Number of reverse steps a sampler takes."""

    @abstractmethod
    def time(self, k: int) -> float:
        """Noise level in [0, 1] of sampler state k (0 <= k <= num_steps)."""

    @abstractmethod
    def prior_sample(self, shape: tuple[int, ...], mask: torch.Tensor | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """x at state 0, shape `shape` (B, ...)."""

    @abstractmethod
    def reverse_step(self, model_output: torch.Tensor, x_t: torch.Tensor, k: int,
                     mask: torch.Tensor | None) -> StepDistribution:
        """p(state k+1 | state k = x_t) given the denoiser's output at state k."""

    def training_loss(self, denoiser: Denoiser, x0: torch.Tensor, mask: torch.Tensor | None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Scalar denoising loss on a batch of clean data x0 (B, ...): x0 corrupted at
        training_times, the denoiser's output on it scored by denoising_loss."""
        t = self.training_times(x0.shape[0], generator).to(x0.dtype)
        x_t, target = self.corrupt(x0, t, mask, generator)
        return self.denoising_loss(denoiser(x_t, t, mask), target, t, mask)

    @abstractmethod
    def training_times(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise levels in [0, 1] drawn for one training batch, shape (B,)."""

    @abstractmethod
    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target): clean states x0 (B, ...) noised by the forward process to noise
        levels t (B,), and what denoising_loss compares the denoiser's output with."""

    @abstractmethod
    def denoising_loss(self, output: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                       mask: torch.Tensor | None) -> torch.Tensor:
        """Scalar loss of the denoiser's output (B, ...) at noise levels t (B,) against the
        target that corrupt returned."""

    def output_shape(self, state_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the denoiser's output for states of shape `state_shape` (B, ...):
        the state's own by default."""
        return tuple(state_shape)

    @abstractmethod
    def forward_sample(self, x0: torch.Tensor, k: int, mask: torch.Tensor | None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw of sampler state k from the forward process q(x_{t_k} | x_0) for clean
        states x0 (B, ...); state num_steps is x0 itself (the design that was scored)."""

    def denoised(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """The denoiser's estimate of the clean state E[x_0 | x_t], shape of x_t (B, ...),
        from its output at noise levels t (B,). Value heads may read it instead of x_t."""
        raise NotImplementedError(f"{type(self).__name__} does not define a denoised estimate of x_0")
