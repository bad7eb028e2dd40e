"""The subspace a Gaussian state lives in: padding masked out, optionally zero centre of mass."""
from __future__ import annotations

import torch


class Projection:
    """Projects tensors onto the state subspace.

    Plain states (B, ...) with no mask pass through. Point clouds (B, N, F) carry a node
    mask (B, N) of 1 for real nodes and 0 for padding; with `com_dims` = k > 0 the first k
    features of every real node (the coordinates) are shifted to zero mean over the nodes.
    """

    def __init__(self, mask: torch.Tensor | None = None, com_dims: int = 0):
        if com_dims and mask is None:
            raise ValueError("zero centre-of-mass projection needs a node mask (B, N)")
        self.mask = mask
        self.com_dims = com_dims

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return x
        m = self.mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
        x = x * m
        if self.com_dims:
            coords = x[..., : self.com_dims]
            centre = coords.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
            x = torch.cat([(coords - centre) * m, x[..., self.com_dims:]], dim=-1)
        return x

    def degrees_of_freedom(self, x: torch.Tensor) -> torch.Tensor:
        """Dimension of the subspace per chain, shape (B,), for states shaped like x."""
        batch = x.shape[0]
        if self.mask is None:
            return torch.full((batch,), float(x[0].numel()), dtype=x.dtype, device=x.device)
        nodes = self.mask.to(x.dtype).sum(1)
        features = x.shape[-1]
        return nodes * features - (self.com_dims if self.com_dims else 0)
