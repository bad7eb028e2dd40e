"""The built-in toy plugin and its oracles pass the plugin contracts."""
import numpy as np
import pytest

from vardbio.testing import check_model_contract, check_oracle_contract
from vardbio_models.toy import LinearReward, QuadraticReward, plugin


@pytest.mark.parametrize("dataset", ["gaussian2", "gaussian8", "mixture2"])
def test_toy_model_contract(dataset):
    check_model_contract(plugin, {"dataset": dataset})


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
