"""A joint process over a tuple of parts that share one time.

Each part is a process of its own (Gaussian, for example coordinates on the zero
centre-of-mass subspace; masked categorical, for example atom types or bond types on atom
pairs) over its own slice of the state. The parts move together: state k of the joint
chain is state k of every part, the denoiser sees one noise level per chain, and the
reverse step is the product of the parts' steps, so sample, rsample, log_prob and kl are
the parts' own, joined or summed.

Representation: a joint state is one flat tensor (B, D), D = Σ_p prod(shape_p), the parts'
states flattened and laid end to end in the declared order; the denoiser's output is packed
the same way with each part's output shape (logits (L, V) for a masked part whose states
are (L, V+1)). One tensor keeps everything around a process unchanged: DiffusionModel's
rollouts and Trajectory (states (K+1, B, D)), chain selection and concatenation, the replay
buffer, value fitting, and VARD, DDPO and best-of-N, which index states by chain and hand
them to steps and value heads. A tuple or a container of parts would have to be taught to
each of them. Flat rather than per node, because the parts do not share an axis besides
the batch (nodes for coordinates and atom types, node pairs for bonds, no nodes at all for a
free vector), and because D is fixed by the declared shapes, so joining batches never pads
one part into another: models with variable-size designs pad every design to the same
number of nodes N and mark the real ones in the node mask (B, N). Networks and value heads
read the parts with JointProcess.split.

Masks: the model's node mask (B, N) reaches each part as its declaration says: 'none' (the
part has no padding), 'node' (one position per node: the mask itself) or 'pair' (one
position per unordered pair i < j of nodes, in torch.triu_indices order, real where both
nodes are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

import torch

from vardbio.processes.base import DiffusionProcess
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.processes.steps import StepDistribution

PART_MASKS = ("none", "node", "pair")
PART_PROCESSES = {GaussianProcessConfig: GaussianProcess, MaskedDiffusionConfig: MaskedDiffusion}
"""The process built for each kind of part config."""

PartConfig = Union[GaussianProcessConfig, MaskedDiffusionConfig]


@dataclass
class JointPart:
    """One part of a joint state.

    name: what the part is called in errors and by split's users.
    process: the part's process config (a type in PART_PROCESSES).
    shape: the part's state per chain, without the batch: (d,) for a vector, (N, 3) for
        coordinates, (N, A+1) for one-hot atom types with a mask channel, (N(N-1)/2, E+1)
        for bond types on node pairs.
    mask: how the part reads the node mask (one of PART_MASKS).
    loss_weight: the weight of the part's denoising loss in the joint training loss.
    """

    name: str
    process: PartConfig
    shape: tuple[int, ...]
    mask: str = "none"
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if type(self.process) not in PART_PROCESSES:
            raise ValueError(f"part '{self.name}': no process for a {type(self.process).__name__}; "
                             f"expected one of {[c.__name__ for c in PART_PROCESSES]}")
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"part '{self.name}': shape must be non-empty and positive, got {self.shape}")
        if self.mask not in PART_MASKS:
            raise ValueError(f"part '{self.name}': unknown mask '{self.mask}'; expected one of {PART_MASKS}")
        if not self.loss_weight >= 0:
            raise ValueError(f"part '{self.name}': loss_weight must be >= 0, got {self.loss_weight}")


@dataclass
class JointProcessConfig:
    """parts: the parts in the order they are laid out in the state (the first sets the
    clock: the joint time(k) and training times are its own);
    time_tolerance: how far another part's noise level at a sampler state may lie from the
    first part's (a Gaussian part's levels are rounded to its integer training times)."""

    parts: list[JointPart] = field(default_factory=list)
    time_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a joint process needs at least one part")
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"joint part names must be distinct, got {names}")
        if self.time_tolerance < 0:
            raise ValueError(f"time_tolerance must be >= 0, got {self.time_tolerance}")


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """The mask (B, N(N-1)/2) of the unordered node pairs i < j (torch.triu_indices order)
    of a node mask (B, N): 1 where both nodes are real."""
    i, j = torch.triu_indices(mask.shape[1], mask.shape[1], 1, device=mask.device)
    return mask[:, i] * mask[:, j]


def split_flat(x: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """The parts (B, *shape) of a packed tensor x (B, Σ prod(shape)), as views."""
    sizes = [math.prod(s) for s in shapes]
    if x.dim() != 2 or x.shape[1] != sum(sizes):
        raise ValueError(f"a packed joint tensor is (B, {sum(sizes)}) for parts of shapes {shapes}, "
                         f"got {tuple(x.shape)}")
    return [chunk.reshape(x.shape[0], *s) for chunk, s in zip(torch.split(x, sizes, dim=1), shapes)]


def pack(parts: list[torch.Tensor]) -> torch.Tensor:
    """Parts (B, *shape_p) laid end to end: (B, Σ prod(shape_p))."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


class JointStep(StepDistribution):
    """The product of the parts' steps: p(x) = Π_p p_p(x_p) over a packed state (B, D).

    steps: one step distribution per part; shapes: the parts' state shapes per chain.
    """

    def __init__(self, steps: list[StepDistribution], shapes: list[tuple[int, ...]]):
        self.steps = steps
        self.shapes = shapes

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return pack([s.sample(generator) for s in self.steps])

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each part's reparameterised draw (Gaussian: mean + σ·noise; categorical: one-hot
        with the straight-through Gumbel-softmax gradient), packed: (B, D)."""
        return pack([s.rsample(generator) for s in self.steps])

    def log_prob(self, x_prev: torch.Tensor) -> torch.Tensor:
        parts = split_flat(x_prev, self.shapes)
        return sum(s.log_prob(x) for s, x in zip(self.steps, parts))

    def kl(self, other: StepDistribution) -> torch.Tensor:
        if not isinstance(other, JointStep) or len(other.steps) != len(self.steps):
            raise TypeError(f"KL between a JointStep of {len(self.steps)} parts and {type(other).__name__} "
                            "is not defined")
        return sum(s.kl(o) for s, o in zip(self.steps, other.steps))


class JointProcess(DiffusionProcess):
    """The parts' processes run side by side on one shared time (see the module docstring).

    The denoiser maps x_t (B, D), t (B,) and the node mask to the packed outputs of every
    part (B, D_out), D_out = Σ_p prod(output shape of part p).
    """

    def __init__(self, config: JointProcessConfig):
        self.config = config
        self.parts = config.parts
        self.processes: list[DiffusionProcess] = [PART_PROCESSES[type(p.process)](p.process) for p in self.parts]
        self.shapes = [p.shape for p in self.parts]
        self.output_shapes = [proc.output_shape(p.shape) for p, proc in zip(self.parts, self.processes)]
        clock = self.processes[0]
        for part, proc in zip(self.parts[1:], self.processes[1:]):
            if proc.num_steps != clock.num_steps:
                raise ValueError(f"part '{part.name}' takes {proc.num_steps} sampling steps, part "
                                 f"'{self.parts[0].name}' {clock.num_steps}: joint parts share their steps")
            gap = max(abs(proc.time(k) - clock.time(k)) for k in range(clock.num_steps + 1))
            if gap > config.time_tolerance:
                raise ValueError(f"part '{part.name}' is {gap:.2e} away in noise level from part "
                                 f"'{self.parts[0].name}' (time_tolerance {config.time_tolerance}): "
                                 "joint parts share their time")

    @property
    def state_size(self) -> int:
        """D, the width of a packed state."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def output_size(self) -> int:
        """D_out, the width of the denoiser's packed output."""
        return sum(math.prod(s) for s in self.output_shapes)

    @property
    def num_steps(self) -> int:
        return self.processes[0].num_steps

    def time(self, k: int) -> float:
        return self.processes[0].time(k)

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parts of a packed state x (B, D) by name, each (B, *shape) (views)."""
        return dict(zip((p.name for p in self.parts), split_flat(x, self.shapes)))

    def split_output(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parts of a packed denoiser output (B, D_out) by name, each (B, *output shape)."""
        return dict(zip((p.name for p in self.parts), split_flat(out, self.output_shapes)))

    def part_masks(self, mask: torch.Tensor | None) -> list[torch.Tensor | None]:
        """What each part reads of the node mask (B, N) (see PART_MASKS); ValueError when
        a 'node' or 'pair' part's positions do not match N."""
        out = []
        for part in self.parts:
            if mask is None or part.mask == "none":
                out.append(None)
                continue
            n = mask.shape[1]
            positions = n if part.mask == "node" else n * (n - 1) // 2
            if part.shape[0] != positions:
                raise ValueError(f"part '{part.name}' has {part.shape[0]} positions but a '{part.mask}' "
                                 f"mask over {n} nodes has {positions}")
            out.append(mask if part.mask == "node" else pair_mask(mask))
        return out

    def _each(self, x: torch.Tensor, mask: torch.Tensor | None):
        """(process, part state (B, *shape), part mask) for every part of x (B, D)."""
        return zip(self.processes, split_flat(x, self.shapes), self.part_masks(mask))

    def prior_sample(self, shape, mask, generator=None):
        if tuple(shape[1:]) != (self.state_size,):
            raise ValueError(f"joint states are (B, {self.state_size}), asked for {tuple(shape)}")
        return pack([proc.prior_sample((shape[0], *s), m, generator)
                     for proc, s, m in zip(self.processes, self.shapes, self.part_masks(mask))])

    def reverse_step(self, model_output, x_t, k, mask):
        outputs = split_flat(model_output, self.output_shapes)
        steps = [proc.reverse_step(o, x, k, m) for (proc, x, m), o in zip(self._each(x_t, mask), outputs)]
        return JointStep(steps, self.shapes)

    def denoised(self, model_output, x_t, t, mask):
        """Each part's estimate of its clean state, packed (B, D)."""
        outputs = split_flat(model_output, self.output_shapes)
        return pack([proc.denoised(o, x, t, m) for (proc, x, m), o in zip(self._each(x_t, mask), outputs)])

    def forward_sample(self, x0, k, mask, generator=None):
        return pack([proc.forward_sample(x, k, m, generator) for proc, x, m in self._each(x0, mask)])

    def training_times(self, batch, generator=None):
        """The first part's training times, shared by every part."""
        return self.processes[0].training_times(batch, generator)

    def corrupt(self, x0, t, mask, generator=None):
        """Every part noised to the same levels t (B,): (x_t (B, D), the parts' targets packed
        (B, Σ prod(output shape)))."""
        noised = [proc.corrupt(x, t, m, generator) for proc, x, m in self._each(x0, mask)]
        return pack([x for x, _ in noised]), pack([target for _, target in noised])

    def denoising_loss(self, output, target, t, mask):
        """Σ_p loss_weight_p · (part p's own denoising loss)."""
        outputs = split_flat(output, self.output_shapes)
        targets = split_flat(target, self.output_shapes)
        return sum(part.loss_weight * proc.denoising_loss(o, y, t, m)
                   for part, proc, o, y, m in zip(self.parts, self.processes, outputs, targets,
                                                  self.part_masks(mask)))
