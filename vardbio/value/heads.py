"""Value heads V_φ(x_t, t): predicted final reward from an intermediate state."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from vardbio.nn import TimeEmbedding, mlp

if TYPE_CHECKING:
    from vardbio.model.diffusion import DiffusionModel


class ValueHead(nn.Module):
    """Wraps a domain network that predicts standardised rewards and returns reward units.

    network(x (B, ...), t (B,) in [0, 1], mask) -> (B,) standardised value.
    forward returns reward_mean + reward_scale * network(...), shape (B,); the two buffers
    are set by fitting from the training rewards.
    input_map: optional (x_t, t, mask) -> x of the same shape, applied before the network
    (DenoisedInput: the reference model's estimate of the clean state). It is not a
    submodule: its weights are neither fitted nor saved with the head.
    """

    def __init__(self, network: nn.Module, input_map: Callable | None = None):
        super().__init__()
        self.network = network
        self.input_map = input_map
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_scale", torch.ones(()))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.reward_mean + self.reward_scale * self.standardised(x_t, t, mask)

    def standardised(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                     mapped: bool = False) -> torch.Tensor:
        """The network's output before de-standardisation, (B,); `mapped`: x_t is already
        the input map's output (fitting maps every state once, see map_inputs)."""
        x = x_t if mapped or self.input_map is None else self.input_map(x_t, t, mask)
        return self.network(x, t, mask).reshape(-1)

    @torch.no_grad()
    def map_inputs(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                   chunk: int = 512) -> torch.Tensor:
        """The input map applied to (M, ...) states in chunks, without gradients; the states
        themselves when the head has no input map."""
        if self.input_map is None:
            return x_t
        parts = [self.input_map(x_t[i:i + chunk], t[i:i + chunk], None if mask is None else mask[i:i + chunk])
                 for i in range(0, len(x_t), chunk)]
        return torch.cat(parts) if parts else x_t


class DenoisedInput:
    """A ValueHead input map: the reference model's estimate x̂_0(x_t, t) of the clean state.

    The network then sees a state on the data's scale at every noise level, whose reward it
    predicts better than that of the raw noisy state (BENCHMARKS.md, "value heads on the
    denoised estimate"); VARD's value gradient reaches x_t through the frozen reference
    denoiser, at the cost of one more denoiser pass per step."""

    def __init__(self, reference: "DiffusionModel"):
        self.reference = reference

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.reference.denoised(x_t, t, mask)


VALUE_INPUTS = ("noisy", "denoised")


def with_value_input(head: ValueHead, value_input: str, reference: "DiffusionModel") -> ValueHead:
    """The head reading the noisy state x_t ('noisy') or the reference model's denoised
    estimate of it ('denoised')."""
    if value_input not in VALUE_INPUTS:
        raise ValueError(f"unknown value-head input '{value_input}'; expected one of {VALUE_INPUTS}")
    head.input_map = DenoisedInput(reference) if value_input == "denoised" else None
    return head


class VectorValueNet(nn.Module):
    """A value network for flat vector states (B, d): an MLP on [x, time features]."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([dim + time_dim] + [hidden] * depth + [1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x_t, self.time(t)], dim=-1)).squeeze(-1)
