"""Contract checks every plugin must pass; call them from a plugin's own tests.

    from vardbio.testing import check_model_contract, check_oracle_contract
    check_model_contract(my_plugin, {"size": "tiny"})

Each check raises AssertionError with a message naming the broken promise.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vardbio.model.checkpoint import load_weights, save_model
from vardbio.model.diffusion import DiffusionModel
from vardbio.model.plugin import ModelPlugin
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
