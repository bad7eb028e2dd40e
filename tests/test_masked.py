"""Masked discrete diffusion: step distributions, KL, straight-through draws, and VARD on
the toy sequence domain against its exact optimum."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vardbio.campaign.runner import run_campaign
from vardbio.cli import compose_config
from vardbio.processes import CategoricalStep, MaskedDiffusion, MaskedDiffusionConfig
from vardbio.testing import check_model_contract, check_oracle_contract
from vardbio_models.toy_sequence import TokenScore, plugin


def _random_step(seed, batch=4, length=3, outcomes=5):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(batch, length, outcomes, generator=g), -1)
    return CategoricalStep(probs, None, 0.5), g


def test_log_prob_and_kl_match_torch_distributions():
    p, g = _random_step(0)
    q, _ = _random_step(1)
    x = p.sample(g)
    cat_p, cat_q = torch.distributions.Categorical(probs=p.probs), torch.distributions.Categorical(probs=q.probs)
    assert torch.allclose(p.log_prob(x), cat_p.log_prob(x.argmax(-1)).sum(-1), atol=1e-5)
    assert torch.allclose(p.kl(q), torch.distributions.kl_divergence(cat_p, cat_q).sum(-1), atol=1e-5)


def test_padding_positions_are_left_out():
    p, g = _random_step(0)
    q, _ = _random_step(1)
    mask = torch.tensor([[1, 1, 0]] * 4, dtype=torch.float32)
    masked_p, masked_q = CategoricalStep(p.probs, mask, 0.5), CategoricalStep(q.probs, mask, 0.5)
    full = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=p.probs[:, :2]),
                                             torch.distributions.Categorical(probs=q.probs[:, :2])).sum(-1)
    assert torch.allclose(masked_p.kl(masked_q), full, atol=1e-5)


def test_rsample_is_one_hot_with_a_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    step = CategoricalStep(torch.softmax(logits, -1), None, 0.3)
    x = step.rsample(torch.Generator().manual_seed(0))
    assert torch.equal(x.detach().sum(-1), torch.ones(2, 3)) and set(x.detach().unique().tolist()) <= {0.0, 1.0}
    (x * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_reverse_steps_keep_revealed_tokens_and_end_fully_revealed():
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=4, sampling_steps=4))
    g = torch.Generator().manual_seed(0)
    x = process.prior_sample((8, 6, 5), None)
    for k in range(process.num_steps):
        logits = torch.randn(8, 6, 4, generator=g)
        step = process.reverse_step(logits, x, k, None)
        nxt = step.sample(g)
        revealed = x[..., 4] == 0
        assert torch.equal(nxt[revealed], x[revealed]), "a revealed token never changes"
        x = nxt
    assert x[..., 4].sum() == 0, "after the last step no position is masked"


def test_kl_between_steps_is_the_unmasking_weighted_token_kl():
    """On masked positions the 'stay masked' outcome cancels: KL = (1 - m_s/m_t)·KL(tokens)."""
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=4))
    x = process.prior_sample((1, 1, 4), None)
    a, b = torch.tensor([[[1.0, 0.0, -1.0]]]), torch.tensor([[[0.0, 0.5, 0.2]]])
    k = 1
    kl = process.reverse_step(a, x, k, None).kl(process.reverse_step(b, x, k, None))
    stay = process.mask_rate(process.time(k + 1)) / process.mask_rate(process.time(k))
    token_kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=a),
                                                 torch.distributions.Categorical(logits=b)).sum()
    assert torch.allclose(kl, (1 - stay) * token_kl, atol=1e-6)


def test_training_loss_is_finite_and_learns_a_marginal():
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=3))
    table = torch.nn.Parameter(torch.zeros(2, 3))
    data = F.one_hot(torch.tensor([[0, 2]] * 64), 4).float()
    opt = torch.optim.Adam([table], lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = process.training_loss(lambda x, t, m: table.expand(x.shape[0], 2, 3), data, None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and table.argmax(-1).tolist() == [0, 2]


def test_bad_score_function_settings_are_named():
    from vardbio.algorithms.vard import VARDConfig
    with pytest.raises(ValueError, match="step_samples >= 2"):
        VARDConfig(step_gradient="score_function", step_samples=1)
    with pytest.raises(ValueError, match="unknown step_gradient 'pathwise'"):
        VARDConfig(step_gradient="pathwise")


def test_bad_masked_settings():
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedDiffusionConfig(vocab_size=1)
    with pytest.raises(ValueError, match="schedule"):
        MaskedDiffusionConfig(schedule="exp")
    with pytest.raises(ValueError, match="relax_temperature"):
        MaskedDiffusionConfig(relax_temperature=0)


def test_toy_sequence_contract():
    check_model_contract(plugin, {})
    check_model_contract(plugin, {}, model=plugin.load({}))


def test_token_score_contract():
    check_oracle_contract(TokenScore(length=3, vocab=4), ["ACD", "DDA"], ["ACZ", "AC", 7])


def test_vard_on_discrete_steps_reaches_the_exact_optimum(tmp_path):
    """Within 10% of the analytic reward shift and 25% of the analytic KL."""
    assert_at_the_optimum(run_campaign(compose_config("config", [
        "campaign=toy_sequence", f"out_dir={tmp_path}", "progress=false"])))


def test_vard_with_the_score_function_gradient_reaches_the_exact_optimum(tmp_path):
    """The unbiased leave-one-out score-function estimate of the one-step value gradient
    lands on the same optimum as the straight-through one."""
    summary = run_campaign(compose_config("config", [
        "campaign=toy_sequence", f"out_dir={tmp_path}", "progress=false",
        "algorithm.step_gradient=score_function", "algorithm.step_samples=4"]))
    assert_at_the_optimum(summary)


def assert_at_the_optimum(s: dict) -> None:
    """Final reward within 10% of the analytic shift, KL within 25%, budget kept."""
    initial, final = s["reward_initial"]["mean"], s["reward_final"]["mean"]
    optimum, kl_opt = s["analytic"]["reward_optimum"], s["analytic"]["kl_optimum"]
    assert abs(final - optimum) <= 0.10 * abs(optimum - initial)
    assert abs(s["kl_to_reference"] - kl_opt) <= 0.25 * kl_opt
    assert s["oracle_calls"] <= 1024


def test_masked_denoised_estimate_keeps_revealed_tokens_and_spreads_masked_ones():
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=4))
    x_t = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])  # token 1, then a mask
    logits = torch.tensor([[[5.0, -1.0, 0.0], [0.0, 1.0, 2.0]]])
    estimate = process.denoised(logits, x_t, torch.tensor([0.5]), None)
    assert torch.equal(estimate[0, 0], x_t[0, 0])
    assert torch.allclose(estimate[0, 1, :3], torch.softmax(logits[0, 1], -1)) and estimate[0, 1, 3] == 0


def test_vard_with_replayed_value_data_reaches_the_exact_optimum(tmp_path):
    """The budgeted loop sample -> score -> refit on every scored design (forward-noised)
    -> fine-tune still lands on the exact optimum of toy_sequence."""
    assert_at_the_optimum(run_campaign(compose_config("config", [
        "campaign=toy_sequence", f"out_dir={tmp_path}", "progress=false", "algorithm.value_data=replay",
        "algorithm.value_samples=512", "algorithm.refresh_every=100", "algorithm.refresh_samples=256"])))


def test_masked_forward_sample_masks_at_the_schedule_rate():
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=4))
    x0 = torch.nn.functional.one_hot(torch.randint(0, 3, (2000, 10), generator=torch.Generator().manual_seed(0)), 4).float()
    g = torch.Generator().manual_seed(1)
    for k in range(4):
        x_t = process.forward_sample(x0, k, None, g)
        masked = x_t[..., 3]
        assert abs(float(masked.mean()) - process.mask_rate(process.time(k))) < 0.01
        kept = masked == 0
        assert torch.equal(x_t[kept], x0[kept])
    assert process.forward_sample(x0, 4, None, g) is x0
    with pytest.raises(ValueError, match="out of range"):
        process.forward_sample(x0, 5, None, g)


def test_token_temperature_sharpens_the_revealed_token_distribution():
    logits = torch.tensor([[[2.0, 1.0, 0.0]]])
    x_t = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])  # masked
    probs = {}
    for tau in (1.0, 0.5):
        process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=1, token_temperature=tau))
        probs[tau] = process.reverse_step(logits, x_t, 0, None).probs[0, 0, :3]  # last step reveals all
    assert torch.allclose(probs[1.0], torch.softmax(logits[0, 0], -1))
    assert torch.allclose(probs[0.5], torch.softmax(logits[0, 0] / 0.5, -1)) and probs[0.5][0] > probs[1.0][0]
    with pytest.raises(ValueError, match="token_temperature"):
        MaskedDiffusionConfig(token_temperature=0.0)
