"""The soft value target against the plain mean on a mixture whose optimum favours a rare
component: the soft target must land closer to the exact optimum (slow: two campaigns)."""
import pytest

from vardbio.campaign.runner import run_campaign
from vardbio.cli import compose_config


@pytest.mark.slow
def test_soft_value_lands_closer_to_the_optimum_than_the_plain_mean(tmp_path):
    results = {}
    for target in ("mean", "soft"):
        results[target] = run_campaign(compose_config("config", [
            "campaign=toy_mixture", f"algorithm.value.target={target}", f"out_dir={tmp_path / target}",
            "progress=false"]))
    optimum = results["soft"]["analytic"]
    weight_opt = optimum["mixture_weights_optimum"][1]
    gaps = {t: (abs(s["reward_final"]["mean"] - optimum["reward_optimum"]),
                abs(s["mixture_weights_final"][1] - weight_opt)) for t, s in results.items()}
    assert gaps["soft"][0] < gaps["mean"][0], gaps
    assert gaps["soft"][1] < gaps["mean"][1], gaps
