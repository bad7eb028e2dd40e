"""Schedules, reverse steps, log-probs and KLs of the Gaussian process."""
import math

import pytest
import torch

from vardbio.processes import (
    GaussianProcess, GaussianProcessConfig, GaussianStep, Projection, alphas_cumprod, sampling_times,
)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_identities(schedule):
    a = alphas_cumprod(schedule, 1000)
    assert a.shape == (1000,)
    assert torch.all(a[1:] < a[:-1]), "ᾱ must decrease strictly"
    assert 0.99 < a[0] < 1.0 and a[-1] < 1e-3
    betas = 1 - a / torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    assert torch.allclose(torch.cumprod(1 - betas, 0), a)
    assert torch.all((betas > 0) & (betas <= 0.999))


def test_linear_schedule_reaches_pure_noise_for_any_length():
    # betas are rescaled by 1000/T, so a short schedule still ends near ᾱ = 0
    for steps in (50, 100, 1000):
        assert alphas_cumprod("linear", steps)[-1] < 1e-3


def test_sampling_times_span_and_descend():
    times = sampling_times(1000, 20)
    assert len(times) == 21 and times[0] == 999 and times[-1] == 0
    assert all(a > b for a, b in zip(times, times[1:]))
    with pytest.raises(ValueError, match="sampling_steps"):
        sampling_times(100, 100)


def test_bad_process_settings_name_the_problem():
    with pytest.raises(ValueError, match="schedule"):
        GaussianProcessConfig(schedule="quadratic")
    with pytest.raises(ValueError, match="prediction"):
        GaussianProcessConfig(prediction="v")
    with pytest.raises(ValueError, match="eta"):
        GaussianProcessConfig(eta=1.5)


def test_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, generator=g)
    step = GaussianStep(mean, 0.7, Projection())
    x = step.sample(g)
    expected = torch.distributions.Normal(mean, 0.7).log_prob(x).sum(1)
    assert torch.allclose(step.log_prob(x), expected, atol=1e-5)


def test_kl_matches_monte_carlo_estimate():
    g = torch.Generator().manual_seed(1)
    mean_p, mean_q = torch.randn(1, 4, generator=g), torch.randn(1, 4, generator=g)
    p, q = GaussianStep(mean_p.expand(200_000, 4), 0.5, Projection()), GaussianStep(mean_q.expand(200_000, 4), 0.5, Projection())
    x = p.sample(g)
    mc = (p.log_prob(x) - q.log_prob(x)).mean()
    closed = p.kl(q)[0]
    assert torch.allclose(closed, (mean_p - mean_q).pow(2).sum() / (2 * 0.25))
    assert abs(float(mc - closed)) < 0.02 + 0.01 * float(closed)


def test_kl_with_different_std_matches_torch():
    mean_p, mean_q = torch.zeros(2, 3), torch.ones(2, 3)
    p, q = GaussianStep(mean_p, 0.3, Projection()), GaussianStep(mean_q, 0.6, Projection())
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean_p, 0.3), torch.distributions.Normal(mean_q, 0.6)).sum(1)
    assert torch.allclose(p.kl(q), expected, atol=1e-5)


def test_zero_com_steps_stay_centred_and_count_degrees_of_freedom():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    proj = Projection(mask, com_dims=3)
    g = torch.Generator().manual_seed(2)
    mean = proj(torch.randn(2, 4, 5, generator=g))
    step = GaussianStep(mean, 0.4, proj)
    x = step.sample(g)
    coords = x[..., :3]
    centre = (coords * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(centre, torch.zeros_like(centre), atol=1e-6)
    assert torch.all(x[mask == 0] == 0), "padding stays zero"
    assert proj.degrees_of_freedom(x).tolist() == [3 * 5 - 3, 2 * 5 - 3]
    # the density on the subspace: a Gaussian with that many dimensions
    diff = (x - mean).pow(2).flatten(1).sum(1)
    dof = torch.tensor([12.0, 7.0])
    expected = -diff / (2 * 0.16) - dof * (math.log(0.4) + 0.5 * math.log(2 * math.pi))
    assert torch.allclose(step.log_prob(x), expected, atol=1e-4)


def test_deterministic_step_has_no_density():
    step = GaussianStep(torch.zeros(2, 3), 0.0, Projection())
    assert torch.equal(step.sample(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="eta > 0"):
        step.log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="eta > 0"):
        step.kl(step)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_reverse_step_with_perfect_denoiser_recovers_the_data_point(prediction):
    """With the exact ε (or x0) the DDIM(η=0) chain lands on the noised point's x0."""
    process = GaussianProcess(GaussianProcessConfig(num_train_steps=100, sampling_steps=10, eta=0.0,
                                                    prediction=prediction, schedule="linear"))
    x0 = torch.tensor([[1.5, -0.5]])
    noise = torch.tensor([[0.3, 0.8]])
    t0 = process.times[0]
    x = process.add_noise(x0, torch.tensor([t0]), noise)
    for k in range(process.num_steps):
        a = float(process.alpha_bar[process.times[k]])
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = process.reverse_step(eps if prediction == "eps" else x0, x, k, None).sample()
    a_end = float(process.alpha_bar[0])
    assert torch.allclose(x, math.sqrt(a_end) * x0 + math.sqrt(1 - a_end) * noise, atol=1e-4)


def test_eta_one_step_variance_is_the_ddpm_posterior_variance():
    process = GaussianProcess(GaussianProcessConfig(num_train_steps=50, sampling_steps=49, eta=1.0))
    k = 10
    t, s = process.times[k], process.times[k + 1]
    a_t, a_s = process.alpha_bar[t], process.alpha_bar[s]
    beta_t = 1 - a_t / a_s
    posterior = (1 - a_s) / (1 - a_t) * beta_t
    assert math.isclose(process.step_std(k) ** 2, float(posterior), rel_tol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_denoised_estimate_from_the_true_noise_is_the_data_point(prediction):
    process = GaussianProcess(GaussianProcessConfig(num_train_steps=100, sampling_steps=10,
                                                    prediction=prediction, com_dims=2))
    mask = torch.tensor([[True, True, True, False]])
    x0 = torch.tensor([[[1.0, 2.0], [-1.5, 0.5], [0.5, -2.5], [0.0, 0.0]]])
    noise = process.projection(mask)(torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(0)))
    for k in (0, 4, 10):
        index = process.times[k]
        x_t = process.add_noise(x0, torch.tensor([index]), noise) * mask[..., None]
        out = noise if prediction == "eps" else x0
        estimate = process.denoised(out, x_t, torch.tensor([process.time(k)]), mask)
        assert torch.allclose(estimate, x0, atol=1e-4), k



def test_gaussian_forward_sample_has_the_forward_marginal():
    """q(x_t | x_0) = N(sqrt(ᾱ) x_0, (1 - ᾱ) I) at the sampler's state times; the last
    state is the design itself."""
    from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig

    process = GaussianProcess(GaussianProcessConfig(num_train_steps=100, sampling_steps=10))
    x0 = torch.full((20000, 2), 3.0)
    g = torch.Generator().manual_seed(0)
    for k in (0, 5, 9):
        a = float(process.alpha_bar[process.times[k]])
        x_t = process.forward_sample(x0, k, None, g)
        assert abs(float(x_t.mean()) - 3.0 * a ** 0.5) < 0.02
        assert abs(float(x_t.std()) - (1 - a) ** 0.5) < 0.02
    assert process.forward_sample(x0, process.num_steps, None, g) is x0
