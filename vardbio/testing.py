"""Contract checks every plugin must pass; call them from a plugin's own tests.

    from vardbio.testing import assert_equivariant, check_model_contract, check_oracle_contract
    check_model_contract(my_plugin, {"size": "tiny"})
    assert_equivariant(model.denoiser, (x_t, t, mask), mask=2, permute=True, output="equivariant")

Each check raises AssertionError with a message naming the broken promise.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vardbio.geometry import random_rotations
from vardbio.model.checkpoint import load_weights, save_model
from vardbio.model.diffusion import DiffusionModel
from vardbio.model.plugin import ModelPlugin
from vardbio.processes.joint import JointProcess, pack, split_flat
from vardbio.reward.oracle import Oracle


def check_model_contract(plugin: ModelPlugin, options: dict[str, Any], batch: int = 3,
                         seed: int = 0, model: DiffusionModel | None = None) -> DiffusionModel:
    """Shapes, step distributions, KL/log-prob consistency, value head, decode, checkpoints.

    `model` defaults to plugin.build(options) (random weights); returns the model checked.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = model if model is not None else plugin.build(options)
    traj = model.rollout(batch, g, keep_log_probs=True)
    steps = model.num_steps
    assert traj.states.shape[:2] == (steps + 1, batch), f"rollout states {tuple(traj.states.shape)}"
    assert traj.log_probs.shape == (steps, batch), "one log-prob per step and chain"
    assert torch.isfinite(traj.log_probs).all(), "log-probs of sampled steps must be finite"
    _check_step(model, traj.states[steps // 2], steps // 2, traj.mask, g)
    _check_value_head(plugin, model, options, traj, g)
    designs = model.decode(traj.final, traj.mask)
    assert len(designs) == batch, f"decode returned {len(designs)} designs for {batch} states"
    with tempfile.TemporaryDirectory() as tmp:
        written = plugin.write_designs(designs, np.arange(batch, dtype=float), Path(tmp) / "designs")
        assert written and all(p.is_file() and p.stat().st_size > 0 for p in written), "no design files"
        _check_checkpoint_round_trip(plugin, model, options, traj, Path(tmp))
    return model


def _check_step(model: DiffusionModel, x: torch.Tensor, k: int, mask, g: torch.Generator) -> None:
    dist = model.step(x, k, mask)
    draw = dist.rsample(g)
    assert draw.shape == x.shape, f"a step maps {tuple(x.shape)} to {tuple(draw.shape)}"
    params = [p for p in model.denoiser.parameters() if p.requires_grad]
    weights = torch.randn(draw.shape, generator=g)  # a plain sum can cancel (one-hot draws sum to 1)
    grads = torch.autograd.grad((draw.float() * weights).sum(), params, allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), "rsample carries no gradient"
    assert torch.allclose(dist.kl(dist).detach(), torch.zeros(x.shape[0]), atol=1e-5), "KL(p||p) must be 0"
    # KL(p||q) = E_p[log p - log q]: Monte Carlo on the first chain repeated, q from a
    # copy of the model with perturbed weights
    perturbed = model.frozen_copy()
    with torch.no_grad():
        for p in perturbed.denoiser.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        n = 4000
        x_rep = x[:1].expand(n, *x.shape[1:]).contiguous()
        m_rep = None if mask is None else mask[:1].expand(n, *mask.shape[1:]).contiguous()
        p_step, q_step = model.step(x_rep, k, m_rep), perturbed.step(x_rep, k, m_rep)
        samples = p_step.sample(g)
        mc = float((p_step.log_prob(samples) - q_step.log_prob(samples)).mean())
        closed = float(p_step.kl(q_step)[0])
    assert closed >= -1e-6, "KL must be non-negative"
    assert abs(mc - closed) <= 0.05 + 0.1 * abs(closed), f"KL {closed:.4f} but E_p[log p - log q] = {mc:.4f}"


def _check_value_head(plugin, model, options, traj, g) -> None:
    head = plugin.value_head(model, {})
    x = traj.states[1].clone().requires_grad_(True)
    t = torch.full((x.shape[0],), 0.5)
    v = head(x, t, traj.mask)
    assert v.shape == (x.shape[0],), f"value head returned {tuple(v.shape)}, expected ({x.shape[0]},)"
    (grad,) = torch.autograd.grad(v.sum(), x)
    assert torch.isfinite(grad).all(), "value gradient with respect to the state must be finite"


def _check_checkpoint_round_trip(plugin, model, options, traj, tmp: Path) -> None:
    path = save_model(model, tmp / "model.pt")
    loaded = load_weights(plugin.build({**model.spec.get("options", {}), **options}), path)
    k = 0
    with torch.no_grad():
        a = model.step(traj.states[k], k, traj.mask)
        b = loaded.step(traj.states[k], k, traj.mask)
    assert float(a.kl(b).abs().max()) < 1e-6, "a saved and reloaded model must take the same steps"


def check_oracle_contract(oracle: Oracle, good: Sequence[Any], bad: Sequence[Any]) -> None:
    """NaN plus a reason for every bad design, the same scores twice, batch = one by one."""
    result = oracle.score(list(good) + list(bad))
    n = len(good)
    assert np.isfinite(result.values[:n]).all(), f"good designs scored {result.values[:n]}"
    assert np.isnan(result.values[n:]).all(), f"bad designs must score NaN, got {result.values[n:]}"
    assert all(result.reasons[n:]), "every NaN needs a reason"
    again = oracle.score(list(good))
    assert np.allclose(again.values, result.values[:n], equal_nan=True), "scores must be deterministic"
    singles = [oracle.score([d]).values[0] for d in good]
    assert np.allclose(singles, result.values[:n]), "a batch must score as its designs one by one"
    assert isinstance(oracle.identity(), str) and oracle.name in oracle.identity()


def assert_equivariant(fn: Callable[..., torch.Tensor], inputs: Sequence[Any], *, vectors: int = 1,
                       translated: Sequence[int] = (0,), output: str = "invariant",
                       output_translated: Sequence[int] | None = None, mask: int | None = None,
                       permute: bool = False, trials: int = 2, shift: float = 5.0, atol: float = 1e-4,
                       seed: int = 0, joint: JointProcess | None = None, vector_part: str = "coords") -> float:
    """Assert that fn(*inputs) is invariant or equivariant to rotations and translations (and
    node permutations) of its state; returns the largest deviation found.

    inputs[0]: the state x (B, N, F); its first 3·`vectors` features are 3-vectors per node
    (the rest are invariant features), and the vectors listed in `translated` move with a
    translation (the others are offsets, which only rotate). mask: the position in inputs
    of a (B, N) node mask, or None; translations move only its real nodes and permutations
    reorder it with the nodes. output: 'invariant' (fn's output, any shape, must not change)
    or 'equivariant' (an output laid out like the state, (B, N, F'): its first 3·`vectors`
    features rotate, those in `output_translated` (default: `translated`) also translate,
    the rest stay, and its nodes follow the permutation). Each of `trials` draws one uniform
    rotation and one translation (standard deviation `shift`) per chain, and with `permute`
    one node permutation. The claim must not hold vacuously: an invariant output has to
    change when the vectors are stretched by 1.5, an equivariant one when it is rotated.

    joint: for packed states of a JointProcess, inputs[0] is (B, D) and an equivariant
    output is packed as the process's outputs (B, D_out); the part named `vector_part`
    (nodes, 3·`vectors`) holds the 3-vectors; with `permute`, parts with a 'node' mask
    follow the node permutation and parts with a 'pair' mask the permutation it induces on
    the pairs i < j (their order in torch.triu_indices), so pair features must be symmetric.
    """
    if output not in ("invariant", "equivariant"):
        raise ValueError(f"output must be 'invariant' or 'equivariant', got '{output}'")
    out_translated = translated if output_translated is None else output_translated
    g = torch.Generator().manual_seed(seed)
    x = inputs[0]
    node_mask = None if mask is None else inputs[mask]
    if joint is not None and node_mask is None:
        raise ValueError("a joint state needs the node mask: give its position in inputs as mask")
    if joint is not None and vector_part not in [p.name for p in joint.parts]:
        raise ValueError(f"joint process has no part '{vector_part}'; parts: {[p.name for p in joint.parts]}")
    n = x.shape[1] if joint is None else node_mask.shape[1]
    worst = 0.0
    with torch.no_grad():
        out = fn(*inputs)
        for _ in range(trials):
            rot = random_rotations(x.shape[0], g, dtype=x.dtype)
            move = shift * torch.randn(x.shape[0], 1, 3, generator=g, dtype=x.dtype)
            perm = torch.randperm(n, generator=g) if permute else torch.arange(n)
            args = list(inputs)
            args[0] = _transform(x, rot, move, vectors, translated, node_mask, perm, joint, vector_part, False)
            if mask is not None:
                args[mask] = node_mask[:, perm]
            moved = fn(*args)
            if output == "invariant":
                expected = out
            else:
                expected = _transform(out, rot, move, vectors, out_translated, node_mask, perm, joint, vector_part,
                                      True)
                unturned = _transform(out, torch.eye(3, dtype=x.dtype).expand_as(rot), 0 * move, vectors, (),
                                      node_mask, perm, joint, vector_part, True)
                turned = float((expected - unturned).abs().max())
                assert turned > atol, f"vacuous equivariance: the output does not change when rotated ({turned:.2e})"
            error = float((moved - expected).abs().max())
            worst = max(worst, error)
            assert error <= atol, (f"not {output} to rotations and translations{' and permutations' * permute}: "
                                   f"max deviation {error:.2e} > {atol}")
        if output == "invariant":
            stretched = list(inputs)
            stretched[0] = x.clone()
            if joint is None:
                stretched[0][..., : 3 * vectors] *= 1.5
            else:
                parts = split_flat(stretched[0], joint.shapes)
                parts[[p.name for p in joint.parts].index(vector_part)][..., : 3 * vectors] *= 1.5
                stretched[0] = pack(parts)
            change = float((fn(*stretched) - out).abs().max())
            assert change > atol, f"vacuous invariance: the output ignores the geometry ({change:.2e})"
    return worst


def pair_permutation(perm: torch.Tensor) -> torch.Tensor:
    """The order (N(N-1)/2,) of the pairs i < j (torch.triu_indices order) after the node
    permutation perm (N,) (new node a is old node perm[a]): new pair q is old pair
    pair_permutation(perm)[q]."""
    n = len(perm)
    i, j = torch.triu_indices(n, n, 1)
    index = torch.zeros(n, n, dtype=torch.long)
    index[i, j] = torch.arange(len(i))
    index = index + index.T
    return index[perm[i], perm[j]]


def _transform(x: torch.Tensor, rot: torch.Tensor, move: torch.Tensor, vectors: int, translated: Sequence[int],
               mask: torch.Tensor | None, perm: torch.Tensor, joint: JointProcess | None, vector_part: str,
               output: bool) -> torch.Tensor:
    """States (B, N, F), or packed joint states (B, D) (outputs (B, D_out) when `output`),
    moved by the isometry (see _isometry) and with their nodes, and a joint state's pairs,
    reordered by perm (N,)."""
    if joint is None:
        return _isometry(x, rot, move, vectors, translated, mask)[:, perm]
    shapes = joint.output_shapes if output else joint.shapes
    moved = []
    for part, tensor in zip(joint.parts, split_flat(x, shapes)):
        if part.name == vector_part:
            tensor = _isometry(tensor, rot, move, vectors, translated, mask)
        if part.mask == "node":
            tensor = tensor[:, perm]
        elif part.mask == "pair":
            tensor = tensor[:, pair_permutation(perm)]
        moved.append(tensor)
    return pack(moved)


def _isometry(x: torch.Tensor, rot: torch.Tensor, move: torch.Tensor, vectors: int,
              translated: Sequence[int], mask: torch.Tensor | None) -> torch.Tensor:
    """States (B, N, F) with their first `vectors` 3-vectors per node rotated by rot (B, 3, 3)
    and those in `translated` moved by move (B, 1, 3) (real nodes only)."""
    b, n = x.shape[:2]
    vecs = torch.einsum("bij,bnaj->bnai", rot, x[..., : 3 * vectors].reshape(b, n, vectors, 3))
    real = torch.ones(b, n, 1, dtype=x.dtype) if mask is None else mask.to(x.dtype).unsqueeze(-1)
    for a in translated:
        vecs[:, :, a] = vecs[:, :, a] + move * real
    return torch.cat([vecs.reshape(b, n, 3 * vectors), x[..., 3 * vectors:]], -1)
