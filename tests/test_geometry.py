"""Shared 3D geometry: uniform rotations, the EGNN layer on both graph layouts, padding, and
the equivariance assertion itself."""
import math

import numpy as np
import pytest
import torch

from vardbio.geometry import (
    DenseGraph, EdgeGraph, EGNNLayer, cat_padded, random_rotations, rotate_vectors, vector_gram,
)
from vardbio.testing import assert_equivariant

N_ROT = 20000
CHI2_47_P001 = 82.72  # chi-square quantile, 47 degrees of freedom, p = 0.001
CHI2_9_P001 = 27.88


def _sphere_chi2(v: np.ndarray) -> float:
    """Chi-square of unit vectors (n, 3) over 48 equal-area cells: 6 bands of z (equal area
    on the sphere by Archimedes' theorem) times 8 sectors of azimuth."""
    band = np.clip(((v[:, 2] + 1) / 2 * 6).astype(int), 0, 5)
    sector = np.clip(((np.arctan2(v[:, 1], v[:, 0]) + math.pi) / (2 * math.pi) * 8).astype(int), 0, 7)
    counts = np.bincount(band * 8 + sector, minlength=48)
    expected = len(v) / 48
    return float(((counts - expected) ** 2 / expected).sum())


def _angle_chi2(rot: torch.Tensor) -> float:
    """Chi-square of rotation angles over 10 bins against the Haar density (1 - cos θ)/π."""
    cos = ((rot.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1).double().numpy()
    edges = np.linspace(0, math.pi, 11)
    expected = np.diff((edges - np.sin(edges)) / math.pi) * len(cos)
    counts = np.histogram(np.arccos(cos), edges)[0]
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.fixture(scope="module")
def rotations():
    return random_rotations(N_ROT, torch.Generator().manual_seed(0))


def test_rotations_are_proper_and_orthogonal(rotations):
    eye = torch.eye(3).expand(N_ROT, 3, 3)
    assert torch.allclose(rotations @ rotations.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(N_ROT), atol=1e-5)
    assert random_rotations(4, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("axis", [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.0, -0.8]])
def test_rotated_unit_vectors_are_uniform_on_the_sphere(rotations, axis):
    v = (rotations @ torch.tensor(axis)).double().numpy()
    assert np.abs(v.mean(0)).max() < 4 * math.sqrt(1 / 3 / N_ROT), "first moment of the uniform law is 0"
    assert np.abs(v.T @ v / N_ROT - np.eye(3) / 3).max() < 0.01, "second moment is I/3"
    assert _sphere_chi2(v) < CHI2_47_P001


def test_rotation_angles_follow_the_haar_law(rotations):
    assert _angle_chi2(rotations) < CHI2_9_P001


def test_the_uniformity_tests_catch_the_old_backbone_sampler():
    """QR of Gaussian matrices without fixing the signs of R's diagonal is not uniform."""
    q = torch.linalg.qr(torch.randn(N_ROT, 3, 3, generator=torch.Generator().manual_seed(0))).Q
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    assert _sphere_chi2((q @ torch.tensor([0.0, 0.0, 1.0])).double().numpy()) > CHI2_47_P001
    assert _angle_chi2(q) > CHI2_9_P001


def test_rotate_vectors_and_gram_features():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 12, generator=g)
    rot = random_rotations(2, g)
    turned = rotate_vectors(x, rot)
    assert torch.allclose(turned[1, 3, 6:9], rot[1] @ x[1, 3, 6:9], atol=1e-6)
    gram = vector_gram(x.reshape(2, 5, 4, 3))
    assert gram.shape == (2, 5, 10)
    assert torch.allclose(vector_gram(turned.reshape(2, 5, 4, 3)), gram, atol=1e-5)
    with pytest.raises(ValueError, match="3-vectors"):
        rotate_vectors(torch.zeros(1, 2, 4), rot[:1])


def test_cat_padded_pads_the_node_dimension():
    a, b = torch.ones(2, 3, 4), 2 * torch.ones(1, 5, 4)
    out = cat_padded([a, b])
    assert out.shape == (3, 5, 4) and out[:2, 3:].abs().sum() == 0 and (out[2] == 2).all()
    masks = cat_padded([torch.ones(2, 3), torch.ones(1, 5)])
    assert masks.sum(1).tolist() == [3, 3, 5]
    assert cat_padded([a, 2 * a], dim=0).shape == (4, 3, 4)


def _layer_inputs(seed: int, b: int = 2, n: int = 6, hidden: int = 8, edge: int = 2):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n)
    mask[1, 4:] = 0
    return (torch.randn(b, n, hidden, generator=g), torch.randn(b, n, 3, generator=g),
            torch.randn(b, n, 3, 3, generator=g), torch.randn(b, n, n, edge, generator=g), mask)


@pytest.mark.parametrize("options", [
    {"vectors": 3},
    {"gate": True, "edge_activation": True, "norm": True, "coord_scale": 15.0, "coord_bias": False,
     "coord_init_gain": 0.5},
])
def test_one_layer_gives_the_same_answer_on_dense_and_edge_list_graphs(options):
    torch.manual_seed(0)
    layer = EGNNLayer(8, 2, **options)
    for p in layer.parameters():  # zero-initialised mixing and tiny gains would hide differences
        p.data.add_(0.1 * torch.randn_like(p))
    h, x, v, e, mask = _layer_inputs(0)
    k = layer.vectors
    b, n = mask.shape
    dense = layer(h, x, e, DenseGraph.complete(mask), v if k else None)
    graph = EdgeGraph.complete(mask.bool())
    src, tgt = graph.source, graph.target
    edge_attr = e[tgt // n, tgt % n, src % n]
    flat = layer(h.reshape(b * n, -1), x.reshape(b * n, 3), edge_attr, graph, v.reshape(b * n, 3, 3) if k else None)
    real = mask.bool().reshape(-1)
    for got, want in zip(flat[:2], dense[:2]):
        assert torch.allclose(got[real], want.reshape(b * n, *want.shape[2:])[real], atol=1e-5)
    if k:
        assert torch.allclose(flat[2][real], dense[2].reshape(b * n, 3, 3)[real], atol=1e-5)


def test_layer_is_equivariant_and_names_its_parts():
    torch.manual_seed(0)
    layer = EGNNLayer(8, 2, vectors=3, names={"edge_mlp": "edge_out", "vector_mix": "mix"})
    assert {"edge_out.1.weight", "mix.weight", "coord_mlp.2.bias"} <= set(layer.state_dict())
    for p in layer.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    h, x, v, e, mask = _layer_inputs(1)

    def moved_points(state, mask):  # state: position and three offsets per node, (B, N, 12)
        _, x_new, v_new = layer(h, state[..., :3], e, DenseGraph.complete(mask), state[..., 3:].unflatten(-1, (3, 3)))
        return torch.cat([x_new, v_new.flatten(2)], -1) * mask[..., None]

    state = torch.cat([x, v.flatten(2)], -1) * mask[..., None]
    assert_equivariant(moved_points, (state, mask), vectors=4, mask=1, output="equivariant")
    with pytest.raises(ValueError, match="unknown EGNN layer parts"):
        EGNNLayer(8, 2, names={"edges": "x"})


def test_assert_equivariant_catches_broken_and_vacuous_claims():
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0))
    centred = lambda y: y[..., :3] - y[..., :3].mean(1, keepdim=True)  # noqa: E731
    radius = lambda y: centred(y).norm(dim=-1).sum(1)  # noqa: E731
    assert assert_equivariant(radius, (x,), permute=True) < 1e-4
    assert_equivariant(lambda y: centred(y), (x,), output="equivariant", output_translated=())
    with pytest.raises(AssertionError, match="not invariant"):
        assert_equivariant(lambda y: y[..., 0].sum(1), (x,))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda y: centred(y) * torch.tensor([1.0, 2.0, 3.0]), (x,), output="equivariant",
                           output_translated=())
    with pytest.raises(AssertionError, match="and permutations"):
        assert_equivariant(lambda y: (centred(y)[:, 0] ** 2).sum(-1), (x,), permute=True)
    with pytest.raises(AssertionError, match="vacuous invariance"):
        assert_equivariant(lambda y: y[..., 3:].sum((1, 2)), (x,))
    with pytest.raises(AssertionError, match="vacuous equivariance"):
        assert_equivariant(lambda y: 0 * y, (x,), output="equivariant", output_translated=())


def test_assert_equivariant_permutes_the_pairs_of_a_joint_state():
    """A packed joint state (coordinates, per-node and per-pair features): pair features
    follow the pairs of the permuted nodes, so a function of the pairs that is symmetric in
    i, j passes and one that reads a fixed pair slot, or the wrong pair order, does not."""
    from vardbio.processes import GaussianProcessConfig, JointPart, JointProcess, JointProcessConfig
    from vardbio.processes import MaskedDiffusionConfig
    from vardbio.processes.joint import pack
    from vardbio.testing import pair_permutation

    n = 5
    joint = JointProcess(JointProcessConfig([
        JointPart("coords", GaussianProcessConfig(sampling_steps=4, schedule="linear", com_dims=3), (n, 3), "node"),
        JointPart("bonds", MaskedDiffusionConfig(vocab_size=2, sampling_steps=4), (n * (n - 1) // 2, 3), "pair")]))
    g = torch.Generator().manual_seed(0)
    x = pack([torch.randn(2, n, 3, generator=g), torch.rand(2, n * (n - 1) // 2, 3, generator=g)])
    mask = torch.ones(2, n)
    mask[1, -1] = 0
    i, j = torch.triu_indices(n, n, 1)

    def energy(state, m):
        """Σ_pairs w(bond features) · |r_ij| over the real pairs: invariant."""
        parts = joint.split(state)
        d = (parts["coords"][:, i] - parts["coords"][:, j]).norm(dim=-1)
        return (parts["bonds"] @ torch.tensor([1.0, 2.0, 3.0]) * d * m[:, i] * m[:, j]).sum(1)

    assert assert_equivariant(energy, (x, mask), mask=1, permute=True, joint=joint) < 1e-4
    with pytest.raises(AssertionError, match="and permutations"):
        assert_equivariant(lambda s, m: joint.split(s)["bonds"][:, 0, 0] * energy(s, m), (x, mask), mask=1,
                           permute=True, joint=joint)
    perm = torch.tensor([2, 0, 1, 4, 3])
    order = pair_permutation(perm)
    assert sorted(order.tolist()) == list(range(len(i)))
    for q in range(len(i)):  # new pair q joins the old nodes perm[i_q], perm[j_q]
        a, b = sorted((int(perm[i[q]]), int(perm[j[q]])))
        assert (int(i[order[q]]), int(j[order[q]])) == (a, b)
