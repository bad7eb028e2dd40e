"""The molecule state: a point cloud x (B, N, F) of heavy atoms with a node mask (B, N).

Features per atom (F = 3 + len(ELEMENTS) + len(H_COUNTS) = 13):
    [0:3]   coordinates in Å, kept at zero centre of mass over the real atoms;
    [3:9]   one-hot element (C N O F S Cl) times FEATURE_SCALE (0.25, as EDM scales categories);
    [9:13]  one-hot number of attached hydrogens (0..3) times FEATURE_SCALE.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

ELEMENTS = ("C", "N", "O", "F", "S", "Cl")
H_COUNTS = (0, 1, 2, 3)
FEATURE_SCALE = 0.25
NUM_FEATURES = 3 + len(ELEMENTS) + len(H_COUNTS)


def encode_state(positions: torch.Tensor, elements: torch.Tensor, hcounts: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """(B, N, F) states from positions (B, N, 3), element and H-count indices (B, N), mask."""
    m = mask.to(positions.dtype).unsqueeze(-1)
    centre = (positions * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    onehot_e = nn.functional.one_hot(elements, len(ELEMENTS)).to(positions.dtype)
    onehot_h = nn.functional.one_hot(hcounts, len(H_COUNTS)).to(positions.dtype)
    x = torch.cat([positions - centre, FEATURE_SCALE * onehot_e, FEATURE_SCALE * onehot_h], -1)
    return x * m


def state_parts(x0: torch.Tensor, mask: torch.Tensor | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, element indices, H counts) of the real atoms of each state (B, N, F).

    Without a mask, real atoms are the rows with any non-zero feature (padding is exactly 0
    in every state the process produces)."""
    if mask is None:
        mask = (x0 != 0).any(-1)
    out = []
    for x, m in zip(x0.detach().cpu().double(), mask.cpu().bool()):
        x = x[m]
        out.append((x[:, :3].numpy(), x[:, 3:3 + len(ELEMENTS)].argmax(-1).numpy(),
                    x[:, 3 + len(ELEMENTS):].argmax(-1).numpy()))
    return out
