"""Value heads V_φ(x_t, t): predicted final reward from an intermediate state."""
from __future__ import annotations

import torch
from torch import nn

from vardbio.nn import TimeEmbedding, mlp


class ValueHead(nn.Module):
    """Wraps a domain network that predicts standardised rewards and returns reward units.

    network(x_t (B, ...), t (B,) in [0, 1], mask) -> (B,) standardised value.
    forward returns reward_mean + reward_scale * network(...), shape (B,); the two buffers
    are set by fitting from the training rewards.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_scale", torch.ones(()))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.reward_mean + self.reward_scale * self.standardised(x_t, t, mask)

    def standardised(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output before de-standardisation, (B,)."""
        return self.network(x_t, t, mask).reshape(-1)


class VectorValueNet(nn.Module):
    """A value network for flat vector states (B, d): an MLP on [x, time features]."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([dim + time_dim] + [hidden] * depth + [1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x_t, self.time(t)], dim=-1)).squeeze(-1)
