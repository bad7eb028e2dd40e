"""Every model registered under the `vardbio.models` entry points passes the model contract,
once per option set it declares in `test_options` (so a new plugin, built-in or installed,
is covered without editing this file); the built-in toy oracles pass the oracle contract."""
from importlib.metadata import entry_points

import numpy as np
import pytest

from vardbio.testing import check_model_contract, check_oracle_contract
from vardbio_models.toy import LinearReward, QuadraticReward, plugin


def _registered_option_sets() -> list:
    cases = []
    for ep in sorted(entry_points(group="vardbio.models"), key=lambda ep: ep.name):
        for i, options in enumerate(ep.load().test_options):
            cases.append(pytest.param(ep.name, options, id=f"{ep.name}-{i}"))
    return cases


@pytest.mark.parametrize("name, options", _registered_option_sets())
def test_registered_model_passes_the_contract(name, options):
    from vardbio import registry

    model_plugin = registry.load("model", name)
    check_model_contract(model_plugin, options, batch=2)


def test_shipped_toy_checkpoint_passes_the_contract():
    check_model_contract(plugin, {}, model=plugin.load({"dataset": "gaussian8"}))


@pytest.mark.parametrize("oracle", [LinearReward(dim=3), QuadraticReward(dim=3, scale=2.0)])
def test_toy_oracle_contract(oracle):
    good = [np.array([0.1, -2.0, 3.0]), np.zeros(3)]
    bad = [np.array([1.0, 2.0]), np.array([np.nan, 0.0, 0.0]), "not a vector"]
    check_oracle_contract(oracle, good, bad)


def test_contract_catches_a_broken_kl():
    """The contract is not vacuous: a step whose KL ignores the means fails it."""
    from vardbio.processes import steps

    original = steps.GaussianStep.kl
    steps.GaussianStep.kl = lambda self, other: 0.0 * original(self, other)
    try:
        with pytest.raises(AssertionError, match="KL"):
            check_model_contract(plugin, {"dataset": "gaussian2"})
    finally:
        steps.GaussianStep.kl = original
