"""DiffusionModel: a denoiser network, a noise process and a decoder to designs."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from vardbio.geometry import cat_padded
from vardbio.processes.base import DiffusionProcess
from vardbio.processes.steps import StepDistribution


@dataclass
class Layout:
    """The shape of a batch of designs before sampling.

    shape: full state shape (B, ...). mask: (B, N) node mask for variable-size designs
    (1 = real node, 0 = padding) or None when every design has the same size.
    """

    shape: tuple[int, ...]
    mask: torch.Tensor | None = None


@dataclass
class Trajectory:
    """A batch of B sampled chains with every state kept.

    states:    (K+1, B, ...) states 0 (prior) .. K (final sample x_0).
    mask:      (B, N) node mask or None.
    log_probs: (K, B) log p(state k+1 | state k) under the sampling model, or None.
    """

    states: torch.Tensor
    mask: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None

    @property
    def final(self) -> torch.Tensor:
        """The finished samples x_0, (B, ...)."""
        return self.states[-1]

    @property
    def batch_size(self) -> int:
        return self.states.shape[1]

    def select(self, index: torch.Tensor) -> "Trajectory":
        """The chains at `index` (a (B',) long tensor or a (B,) bool mask)."""
        return Trajectory(
            self.states[:, index],
            None if self.mask is None else self.mask[index],
            None if self.log_probs is None else self.log_probs[:, index],
        )

    @staticmethod
    def concat(parts: Sequence["Trajectory"]) -> "Trajectory":
        """Join trajectories of the same length along the batch, zero-padding the node
        dimension of variable-size designs (states and masks) to the widest part."""
        masks = [p.mask for p in parts]
        logps = [p.log_probs for p in parts]
        return Trajectory(
            cat_padded([p.states for p in parts], 1),
            None if masks[0] is None else cat_padded(masks, 0),
            None if logps[0] is None else torch.cat(logps, 1),
        )


LayoutSampler = Callable[[int, torch.Generator | None], Layout]
Decoder = Callable[[torch.Tensor, torch.Tensor | None], list[Any]]


class DiffusionModel(nn.Module):
    """denoiser + process + decode.

    denoiser(x_t (B, ...), t (B,) in [0, 1], mask) -> (B, ...) the process's prediction.
    layout(n, generator) -> Layout: the state shape (and node mask) for n new samples.
    decoder(x_0 (B, ...), mask) -> B designs (what oracles score).
    spec: a JSON-serialisable description (plugin name and architecture options) saved with
    checkpoints, so a checkpoint is never loaded into the wrong model.

    After freeze_final_steps(n) the last n sampler steps read `final_denoiser`, a frozen
    copy of the denoiser as it was then, and only the first `steerable_steps` follow
    `denoiser`.
    """

    def __init__(self, denoiser: nn.Module, process: DiffusionProcess, layout: LayoutSampler,
                 decoder: Decoder, spec: dict[str, Any]):
        super().__init__()
        self.denoiser = denoiser
        self.process = process
        self.layout = layout
        self.decoder = decoder
        self.spec = dict(spec)
        self.frozen_final_steps = 0
        self.final_denoiser: nn.Module | None = None

    @property
    def num_steps(self) -> int:
        return self.process.num_steps

    @property
    def steerable_steps(self) -> int:
        """The sampler steps 0 .. steerable_steps - 1 that fine-tuning and guidance may change."""
        return self.num_steps - self.frozen_final_steps

    def freeze_final_steps(self, count: int) -> "DiffusionModel":
        """Keep the last `count` sampler steps as the denoiser makes them now, for good.

        Those steps read a frozen copy of today's denoiser (saved with the weights; the spec
        records `frozen_final_steps`), so fine-tuning the rest leaves them the reference's
        when this is called on the pretrained model. Then by the data-processing inequality
        the path KL of the steerable steps alone bounds the KL between the two models'
        designs: a Gaussian chain's last step has so small a σ that a tiny mean shift there
        costs hundreds of nats of path KL while hardly moving the designs.
        """
        count = int(count)
        if not 0 <= count < self.num_steps:
            raise ValueError(f"frozen_final_steps must be in [0, {self.num_steps}) for a "
                             f"{self.num_steps}-step sampler, got {count}")
        if self.frozen_final_steps:
            raise ValueError(f"the model's last {self.frozen_final_steps} steps are frozen already")
        if count:
            self.final_denoiser = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
            self.frozen_final_steps = count
            self.spec["frozen_final_steps"] = count
        return self

    def time_tensor(self, k: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The noise level of state k as a (B,) tensor for the networks."""
        return torch.full((batch,), self.process.time(k), dtype=like.dtype, device=like.device)

    def step(self, x_t: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> StepDistribution:
        """p_θ(state k+1 | state k = x_t) for a batch x_t (B, ...); a frozen final step
        reads final_denoiser."""
        denoiser = self.denoiser if k < self.steerable_steps else self.final_denoiser
        out = denoiser(x_t, self.time_tensor(k, x_t.shape[0], x_t), mask)
        return self.process.reverse_step(out, x_t, k, mask)

    def denoised(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model's estimate of the clean state from x_t (B, ...) at noise levels t (B,)."""
        return self.process.denoised(self.denoiser(x_t, t, mask), x_t, t, mask)

    def decode(self, x0: torch.Tensor, mask: torch.Tensor | None = None) -> list[Any]:
        return self.decoder(x0.detach().cpu(), None if mask is None else mask.cpu())

    @torch.no_grad()
    def rollout(self, n: int, generator: torch.Generator | None = None,
                keep_log_probs: bool = False) -> Trajectory:
        """Sample n chains, keeping every state (and the step log-probs if asked)."""
        layout = self.layout(n, generator)
        device = next(self.parameters()).device
        mask = None if layout.mask is None else layout.mask.to(device)
        x = self.process.prior_sample(layout.shape, layout.mask, generator).to(device)
        states, log_probs = [x], []
        for k in range(self.num_steps):
            dist = self.step(x, k, mask)
            x = dist.sample(generator)
            if keep_log_probs:
                log_probs.append(dist.log_prob(x))
            states.append(x)
        return Trajectory(torch.stack(states), mask, torch.stack(log_probs) if keep_log_probs else None)

    def frozen_copy(self) -> "DiffusionModel":
        """A deep copy with gradients off and in eval mode: the reference model p_ref."""
        ref = copy.deepcopy(self)
        ref.requires_grad_(False)
        return ref.eval()


def path_kl(model: DiffusionModel, reference: DiffusionModel, traj: Trajectory) -> torch.Tensor:
    """Σ_k KL(p_θ(· | x_k) || p_ref(· | x_k)) along trajectories sampled from `model`, (B,).

    Its mean is a Monte-Carlo estimate of the KL between the two models' path measures,
    an upper bound on the KL between their final-sample distributions.
    """
    total = torch.zeros(traj.batch_size)
    with torch.no_grad():
        for k in range(model.num_steps):
            x = traj.states[k]
            total += model.step(x, k, traj.mask).kl(reference.step(x, k, traj.mask)).cpu()
    return total


def path_log_ratio(model: DiffusionModel, reference: DiffusionModel, traj: Trajectory) -> torch.Tensor:
    """Σ_k log p_ref(x_{k+1} | x_k) - log p_θ(x_{k+1} | x_k) along trajectories sampled from
    `model`, (B,). Its exponential is an importance weight that turns expectations over
    `model`'s samples into expectations over the reference's: conditional on the final
    sample x_0, its mean over paths is p_ref(x_0) / p_θ(x_0). The log p_θ terms come from
    traj.log_probs when the rollout kept them (one denoiser call per step instead of two)."""
    total = torch.zeros(traj.batch_size)
    with torch.no_grad():
        for k in range(model.num_steps):
            x, x_next = traj.states[k], traj.states[k + 1]
            ref = reference.step(x, k, traj.mask).log_prob(x_next)
            own = traj.log_probs[k] if traj.log_probs is not None else model.step(x, k, traj.mask).log_prob(x_next)
            total += (ref - own).cpu()
    return total
