"""DenoiserValueNet: a value network that starts from a pretrained TokenTransformer trunk."""
import numpy as np
import torch
import torch.nn.functional as F

from vardbio import registry
from vardbio.model.diffusion import Trajectory
from vardbio.nn import DenoiserValueNet, TokenTransformer
from vardbio.value import ValueFitConfig, ValueHead, fit_value

VOCAB, LENGTH = 5, 12  # token 0 is PAD


def _trunk(seed: int = 0) -> TokenTransformer:
    torch.manual_seed(seed)
    return TokenTransformer(VOCAB, LENGTH, width=32, layers=2, heads=4, ff=64, time_dim=16)


def _strings(n: int, seed: int) -> torch.Tensor:
    """(n, L, V+1) one-hot strings of 3..L real tokens (1..V-1) followed by PAD."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    lengths = torch.randint(3, LENGTH + 1, (n,), generator=g)
    tokens[torch.arange(LENGTH) >= lengths[:, None]] = 0
    return F.one_hot(tokens, VOCAB + 1).float()


def test_shape_frozen_weights_and_gradient_to_the_state():
    trunk = _trunk()
    net = DenoiserValueNet(trunk, pad_index=0, train_layers=1)
    x = _strings(6, 1).requires_grad_(True)
    out = net(x, torch.rand(6))
    assert out.shape == (6,)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # VARD's value gradient reaches x_t
    trained = {name for name, _ in net.named_parameters()}
    assert not any(name.startswith(("embed", "frozen", "time_proj")) for name in trained)
    assert any(name.startswith("trained.0") for name in trained)
    assert torch.equal(net.state_dict()["frozen.0.linear1.weight"], trunk.encoder.layers[0].linear1.weight)
    net.requires_grad_(True)  # what fitting does; the held weights stay out of the optimiser
    assert {name for name, _ in net.named_parameters()} == trained


def test_positions_outside_the_mask_do_not_change_the_value():
    torch.manual_seed(0)
    net = DenoiserValueNet(_trunk(), pad_index=0, train_layers=2).eval()
    x = _strings(4, 2)
    mask = torch.ones(4, LENGTH)
    mask[:, 8:] = 0
    other = x.clone()
    other[:, 8:] = F.one_hot(torch.randint(0, VOCAB + 1, (4, LENGTH - 8)), VOCAB + 1).float()
    t = torch.rand(4)
    with torch.no_grad():
        assert torch.allclose(net(x, t, mask), net(other, t, mask), atol=1e-5)


def test_learns_a_token_count_on_tiny_data():
    """Reward = number of token-1 occurrences; 400 clean strings, held-out R² > 0.95."""
    x = _strings(400, 3)
    rewards = x[..., 1].sum(1).double().numpy()
    head = ValueHead(DenoiserValueNet(_trunk(), pad_index=0, train_layers=2, hidden=32))
    report = fit_value(head, Trajectory(x[None]), rewards, [0.0],
                       ValueFitConfig(epochs=60, patience=10, batch_size=64, lr=3e-3),
                       generator=torch.Generator().manual_seed(0))
    assert report.r2 > 0.95, report.r2
    assert np.isfinite(report.final_loss)


def test_molecule_string_plugin_builds_the_trunk_head_from_its_reference():
    plugin = registry.load("model", "molecule_string")
    model = plugin.build(dict(plugin.test_options[0]))
    head = plugin.value_head(model, {"kind": "denoiser", "train_layers": 0, "hidden": 16})
    x = F.one_hot(torch.randint(0, 26, (3, 32)), 27).float()
    assert head(x, torch.rand(3)).shape == (3,)
    assert torch.equal(head.network.frozen[0].linear1.weight, model.denoiser.encoder.layers[0].linear1.weight)
