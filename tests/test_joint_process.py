"""The joint process: its step is the product of the parts' steps (log_prob and KL are the
parts' sums, rsample reaches every part), its parts read the node mask as declared, and its
parts share their time; seeded and fast."""
import pytest
import torch

from vardbio.processes import (
    GaussianProcessConfig, JointPart, JointProcess, JointProcessConfig, MaskedDiffusionConfig, pair_mask,
)
from vardbio.processes.joint import pack

N, ATOMS, BONDS, STEPS = 4, 3, 2, 6
PAIRS = N * (N - 1) // 2


def molecule_like(steps: int = STEPS) -> JointProcess:
    """Coordinates (N, 3) at zero centre of mass, atom types (N, A+1) and bond types on node
    pairs (N(N-1)/2, E+1), masked per node and per pair, plus a free vector (2,)."""
    gaussian = GaussianProcessConfig(num_train_steps=1000, schedule="linear", sampling_steps=steps, com_dims=3)
    return JointProcess(JointProcessConfig([
        JointPart("coords", gaussian, (N, 3), mask="node"),
        JointPart("atoms", MaskedDiffusionConfig(vocab_size=ATOMS, sampling_steps=steps), (N, ATOMS + 1), mask="node"),
        JointPart("bonds", MaskedDiffusionConfig(vocab_size=BONDS, sampling_steps=steps), (PAIRS, BONDS + 1),
                  mask="pair", loss_weight=0.5),
        JointPart("free", GaussianProcessConfig(num_train_steps=1000, sampling_steps=steps), (2,)),
    ]))


def node_mask(batch: int = 5) -> torch.Tensor:
    """(B, N): the first chain has its last node padded, the second its last two."""
    mask = torch.ones(batch, N)
    mask[0, -1] = 0
    mask[1, -2:] = 0
    return mask


def random_output(process: JointProcess, batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, process.output_size, generator=torch.Generator().manual_seed(seed))


def state_at(process: JointProcess, k: int, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A state at sampler step k: k random reverse steps from the prior."""
    g = torch.Generator().manual_seed(seed)
    x = process.prior_sample((mask.shape[0], process.state_size), mask, g)
    for j in range(k):
        x = process.reverse_step(random_output(process, mask.shape[0], 100 + j), x, j, mask).sample(g)
    return x


def test_log_prob_and_kl_are_the_sums_of_the_parts():
    process, mask = molecule_like(), node_mask()
    k = 0  # every categorical position still masked: each part has something to weigh
    x = state_at(process, k, mask)
    out_p, out_q = random_output(process, 5, 1), random_output(process, 5, 2)
    p, q = process.reverse_step(out_p, x, k, mask), process.reverse_step(out_q, x, k, mask)
    x_next = p.sample(torch.Generator().manual_seed(3))
    parts_x, parts_next = process.split(x), process.split(x_next)
    parts_p, parts_q = process.split_output(out_p), process.split_output(out_q)
    log_prob = kl = 0.0
    for part, proc, m in zip(process.parts, process.processes, process.part_masks(mask)):
        own_p = proc.reverse_step(parts_p[part.name], parts_x[part.name], k, m)
        own_q = proc.reverse_step(parts_q[part.name], parts_x[part.name], k, m)
        part_kl = own_p.kl(own_q)
        assert (part_kl > 1e-3).all(), f"part '{part.name}' must contribute to the KL"
        log_prob = log_prob + own_p.log_prob(parts_next[part.name])
        kl = kl + part_kl
    assert torch.allclose(p.log_prob(x_next), log_prob, atol=1e-4)
    assert torch.allclose(p.kl(q), kl, atol=1e-5)
    assert torch.allclose(p.kl(p), torch.zeros(5), atol=1e-6)


def test_rsample_gradients_reach_every_part():
    process, mask = molecule_like(), node_mask()
    x = state_at(process, 1, mask)
    out = random_output(process, 5, 1).requires_grad_(True)
    draw = process.reverse_step(out, x, 1, mask).rsample(torch.Generator().manual_seed(0))
    weights = torch.randn(draw.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((draw * weights).sum(), out)
    for name, part_grad in process.split_output(grad).items():
        assert part_grad.abs().sum() > 0, f"no gradient reaches part '{name}'"


def test_shapes_along_a_chain_and_at_its_end():
    process, mask = molecule_like(), node_mask()
    assert process.state_size == N * 3 + N * (ATOMS + 1) + PAIRS * (BONDS + 1) + 2
    assert process.output_size == N * 3 + N * ATOMS + PAIRS * BONDS + 2
    x = state_at(process, STEPS, mask)
    assert x.shape == (5, process.state_size)
    parts = process.split(x)
    assert parts["coords"].shape == (5, N, 3) and parts["bonds"].shape == (5, PAIRS, BONDS + 1)
    assert parts["atoms"][..., ATOMS].sum() == 0 and parts["bonds"][..., BONDS].sum() == 0, \
        "no categorical position is still masked after the last step"
    assert torch.equal(parts["atoms"].sum(-1), torch.ones(5, N)), "atom types are one-hot"
    with pytest.raises(ValueError, match=r"\(B, 48\)"):
        process.prior_sample((5, 47), mask)


def test_parts_read_the_node_mask_as_declared():
    process, mask = molecule_like(), node_mask()
    expected = torch.tensor([[float(mask[b, i] * mask[b, j]) for i in range(N) for j in range(i + 1, N)]
                             for b in range(5)])
    assert torch.equal(pair_mask(mask), expected)
    x = state_at(process, 3, mask)
    coords = process.split(x)["coords"]
    assert coords[0, -1].abs().sum() == 0 and coords[1, -2:].abs().sum() == 0, "padded nodes stay at 0"
    assert coords.sum(1).abs().max() < 1e-6 * coords.abs().max() * N * 100, "coordinates keep zero centre of mass"
    # what the denoiser says about padded atoms and pairs with a padded atom does not count
    x = state_at(process, 0, mask)
    out = random_output(process, 5, 1)
    parts = {name: part.clone() for name, part in process.split_output(out).items()}
    parts["atoms"][0, -1, 0] += 3.0
    parts["bonds"][0, expected[0] == 0, 0] += 3.0
    p, q = process.reverse_step(out, x, 0, mask), process.reverse_step(pack(list(parts.values())), x, 0, mask)
    assert p.kl(q).abs().max() == 0
    parts["atoms"][0, 0, 0] += 3.0
    assert process.reverse_step(pack(list(parts.values())), x, 0, mask).kl(p)[0] > 0.1, "a real atom counts"
    parts["bonds"][1, 0, 0] += 3.0  # the one real pair of chain 1
    assert process.reverse_step(pack(list(parts.values())), x, 0, mask).kl(p)[1] > 0.1, "a real pair counts"
    assert process.part_masks(None) == [None] * 4
    with pytest.raises(ValueError, match="'coords' has 4 positions but a 'node' mask over 5 nodes has 5"):
        process.part_masks(torch.ones(2, 5))


def test_training_loss_is_the_weighted_sum_of_the_parts_at_one_shared_time():
    process, mask = molecule_like(), node_mask()
    g = torch.Generator().manual_seed(0)
    x0 = state_at(process, STEPS, mask)
    t = process.training_times(5, g)
    x_t, target = process.corrupt(x0, t, mask, g)
    out = random_output(process, 5, 1)
    parts_out, parts_target = process.split_output(out), process.split_output(target)
    by_part = [part.loss_weight * proc.denoising_loss(parts_out[part.name], parts_target[part.name], t, m)
               for part, proc, m in zip(process.parts, process.processes, process.part_masks(mask))]
    assert torch.allclose(process.denoising_loss(out, target, t, mask), sum(by_part))
    # every part is noised to the same level: all masked at t = 1, all clean at t = 0
    noisy = process.split(process.corrupt(x0, torch.ones(5), mask, g)[0])
    assert noisy["atoms"][..., ATOMS].sum() == mask.sum() and noisy["bonds"][..., BONDS].sum() == pair_mask(mask).sum()
    clean = process.split(process.corrupt(x0, torch.zeros(5), mask, g)[0])
    assert torch.equal(clean["atoms"], process.split(x0)["atoms"])
    assert (clean["coords"] - process.split(x0)["coords"]).abs().max() < 0.05
    assert torch.isfinite(process.training_loss(lambda x, t, m: out, x0, mask, g))


def test_forward_sample_and_denoised_act_per_part():
    process, mask = molecule_like(), node_mask()
    x0 = state_at(process, STEPS, mask)
    assert torch.equal(process.forward_sample(x0, STEPS, mask), x0)
    prior_like = process.split(process.forward_sample(x0, 0, mask, torch.Generator().manual_seed(0)))
    assert prior_like["atoms"][..., ATOMS].sum() == mask.sum(), "state 0: every real atom masked"
    x_t = state_at(process, 2, mask)
    t = torch.full((5,), process.time(2))
    out = random_output(process, 5, 1)
    estimate = process.split(process.denoised(out, x_t, t, mask))
    own = process.processes[1].denoised(process.split_output(out)["atoms"], process.split(x_t)["atoms"], t, mask)
    assert torch.equal(estimate["atoms"], own)


def test_parts_must_share_steps_and_time():
    with pytest.raises(ValueError, match="'b' takes 4 sampling steps, part 'a' 6"):
        JointProcess(JointProcessConfig([
            JointPart("a", GaussianProcessConfig(sampling_steps=6), (2,)),
            JointPart("b", MaskedDiffusionConfig(sampling_steps=4), (3, 21))]))
    # a cosine mask schedule still shares the sampler's grid of times: only the grid counts
    JointProcess(JointProcessConfig([
        JointPart("a", GaussianProcessConfig(num_train_steps=1000, sampling_steps=6), (2,)),
        JointPart("b", MaskedDiffusionConfig(sampling_steps=6, schedule="cosine"), (3, 21))]))
    with pytest.raises(ValueError, match="noise level"):
        JointProcess(JointProcessConfig([
            JointPart("a", GaussianProcessConfig(num_train_steps=20, sampling_steps=6), (2,)),
            JointPart("b", MaskedDiffusionConfig(sampling_steps=6), (3, 21))]))
    with pytest.raises(ValueError, match="distinct"):
        JointProcessConfig([JointPart("a", GaussianProcessConfig(), (2,)),
                            JointPart("a", GaussianProcessConfig(), (2,))])
    with pytest.raises(ValueError, match="unknown mask 'edge'"):
        JointPart("a", GaussianProcessConfig(), (2,), mask="edge")
    with pytest.raises(ValueError, match="no process for a dict"):
        JointPart("a", {}, (2,))
