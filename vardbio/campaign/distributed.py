"""Several processes for one campaign, through Hugging Face accelerate.

    accelerate launch --multi_gpu --num_processes 2 -m vardbio run campaign=toy_linear ...

Every process holds the same model. Rollouts are sharded: each process samples its share
of a batch (`shard`) with its own random stream. Oracles run once per design: every
process sends its designs to process 0, which scores the union and sends each process its
rewards back (`CollectiveReward`), together with the oracle ledger, so budget decisions
agree everywhere. The denoiser is wrapped in DistributedDataParallel while the algorithm
trains, so gradients are averaged and parameters stay identical. Value heads are fitted on
the chains of all processes and copied from process 0. Only process 0 writes files.

A single process (a plain `vardbio run`) uses the same code with `world_size == 1`, where
every collective is the identity and nothing is wrapped.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vardbio.algorithms.base import Collective
from vardbio.campaign.config import AccelerateSection
from vardbio.model.diffusion import DiffusionModel, Trajectory
from vardbio.reward.reward import Reward, RewardBatch

class Distributed(Collective):
    """The processes of one run (one or several), with the collectives the campaign needs."""

    def __init__(self, settings: AccelerateSection | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        settings = settings or AccelerateSection()
        if settings.mixed_precision == "fp16" and (settings.cpu or not torch.cuda.is_available()):
            raise ValueError("accelerate.mixed_precision=fp16 needs a CUDA GPU; use 'bf16' or 'no'")
        # Buffers are not broadcast on each forward: ranks may run different numbers of
        # no-grad forwards (rollouts), and the buffers never change during fine-tuning.
        # Without a GPU, accelerate only forms a multi-process group when told to use the CPU.
        self.accelerator = Accelerator(
            mixed_precision=settings.mixed_precision,
            cpu=settings.cpu or not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.world_size:
            raise ValueError(f"launched as {launched} processes but accelerate formed a group of "
                             f"{self.world_size}; check the `accelerate launch` options")
        self._wrapped: torch.nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> int:
        base, extra = divmod(n, self.world_size)
        return base + (1 if self.rank < extra else 0)

    def offsets(self, counts: Sequence[int]) -> tuple[int, int]:
        """[start, end) of this process's items in the rank-ordered union of `counts`."""
        start = int(sum(counts[: self.rank]))
        return start, start + int(counts[self.rank])

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """End the process group once every process is done with it. Call after a run that
        succeeded on every process: a group left to the interpreter's exit can abort the
        process (gloo's worker threads outliving Python), failing a finished run."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            self.barrier()
            torch.distributed.destroy_process_group()

    def gather_objects(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Process 0's `obj` on every process."""
        if self.world_size == 1:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def accumulating(self, model: DiffusionModel, last: bool) -> Iterator[None]:
        if last or self._wrapped is None or model.denoiser is not self._wrapped:
            yield
            return
        with self.accelerator.no_sync(self._wrapped):
            yield

    def all_values(self, values: np.ndarray) -> np.ndarray:
        return np.concatenate(self.gather_objects(np.asarray(values)))

    def gather_scored(self, traj: Trajectory, rewards: np.ndarray) -> tuple[Trajectory, np.ndarray]:
        if self.world_size == 1:
            return traj, rewards
        parts = self.gather_objects((_to_cpu(traj), np.asarray(rewards)))
        device = traj.states.device
        joined = Trajectory.concat([p[0] for p in parts])
        return (Trajectory(joined.states.to(device), None if joined.mask is None else joined.mask.to(device),
                           None if joined.log_probs is None else joined.log_probs.to(device)),
                np.concatenate([p[1] for p in parts]))

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.world_size == 1:
            return
        for tensor in module.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)

    def prepare(self, model: DiffusionModel) -> None:
        """Wrap the denoiser for training (DDP across processes, autocast under mixed
        precision); `training` swaps the wrapper in. Call once, after loading weights."""
        wrapped = self.accelerator.prepare_model(model.denoiser)
        self._wrapped = None if wrapped is model.denoiser else wrapped

    @contextlib.contextmanager
    def training(self, model: DiffusionModel) -> Iterator[None]:
        """Within the block, model.denoiser is the prepared wrapper, so the algorithm's
        backward passes average gradients across processes; outside, the plain module
        (whose state_dict keys checkpoints use)."""
        if self._wrapped is None:
            yield
            return
        inner = model.denoiser
        model.denoiser = self._wrapped
        try:
            yield
        finally:
            model.denoiser = inner

    def reduce_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Metrics of all processes: counts (keys starting with 'n_') summed, other numbers
        averaged over the processes that reported them (NaN ignored)."""
        if self.world_size == 1:
            return metrics
        every = self.gather_objects(metrics)
        keys: list[str] = []
        for m in every:
            keys += [k for k in m if k not in keys]
        out: dict[str, Any] = {}
        for key in keys:
            values = [float(m[key]) for m in every if key in m]
            if key.startswith("n_"):
                out[key] = int(sum(values))
            else:
                finite = [v for v in values if np.isfinite(v)]
                out[key] = float(np.mean(finite)) if finite else float("nan")
        return out

    def rank_seed(self, seed: int) -> int:
        """The seed of this process's random stream: `seed` itself on process 0."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class CollectiveReward(Reward):
    """A Reward that scores each design once across processes.

    Every process calls it with its own designs (all must call it the same number of
    times); process 0 scores the union in rank order with the oracles, then sends each
    process its slice of the RewardBatch and a copy of its ledger. An oracle error on
    process 0 is raised on every process.
    """

    def __init__(self, inner: Reward, dist: Distributed):
        super().__init__(inner.terms, inner.evaluator, inner.aggregation, inner.nan_policy,
                         inner.nan_penalty)
        self.dist = dist

    def __call__(self, designs: Sequence[Any]) -> RewardBatch:
        dist = self.dist
        if dist.world_size == 1:
            return super().__call__(designs)
        parts = dist.gather_objects(list(designs))
        payload: Any = None
        if dist.is_main:
            try:
                batch = super().__call__([d for part in parts for d in part])
                payload = ("ok", batch, self.ledger.state_dict())
            except Exception as err:  # re-raised on every process below
                payload = ("error", err, self.ledger.state_dict())
        status, value, ledger = dist.broadcast_object(payload)
        if not dist.is_main:
            self.ledger.load_state_dict(ledger)
        if status == "error":
            raise value
        start, end = dist.offsets([len(p) for p in parts])
        return _slice_batch(value, start, end)


def _slice_batch(batch: RewardBatch, start: int, end: int) -> RewardBatch:
    part = slice(start, end)
    return RewardBatch(batch.values[part], {k: v[part] for k, v in batch.components.items()},
                       batch.reasons[part], {k: v[part] for k, v in batch.transformed.items()},
                       batch.failed[part], batch.provenance)


def _to_cpu(traj: Trajectory) -> Trajectory:
    return Trajectory(traj.states.cpu(), None if traj.mask is None else traj.mask.cpu(),
                      None if traj.log_probs is None else traj.log_probs.cpu())

