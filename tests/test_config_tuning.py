"""Settings per algorithm inside a campaign file (`algorithms: {vard: {...}, ddpo: {...}}`):
applied over the algorithm preset when that algorithm runs, under the command line's
overrides, recorded in `applied_tuning`; a key that is not a registered algorithm is an error."""
import pytest
from omegaconf import OmegaConf

from vardbio.campaign.config import compose_config, compose_run_config, to_run_config
from vardbio.cli import main


def test_the_campaign_block_of_the_running_algorithm_is_applied_and_recorded():
    vard = compose_run_config(["campaign=protein_stability", "algorithm=vard"])
    assert vard.applied_tuning == "campaign_file:protein_stability.algorithms.vard"
    assert vard.algorithm["beta"] == 0.01 and vard.algorithm["rollout_chunk"] == 128
    # nested keys merge with the preset's: the block sets value.epochs, the preset value.target
    assert vard.algorithm["value"]["epochs"] == 10 and vard.algorithm["value"]["target"] == "mean"
    ddpo = compose_run_config(["campaign=protein_stability", "algorithm=ddpo"])
    assert ddpo.applied_tuning == "campaign_file:protein_stability.algorithms.ddpo"
    assert ddpo.algorithm["steps_per_update"] == 8 and "beta" not in ddpo.algorithm
    plain = compose_run_config(["campaign=protein_stability", "algorithm=best_of_n"])
    assert plain.applied_tuning is None
    assert plain.algorithm == OmegaConf.to_container(compose_config("config", ["algorithm=best_of_n"]).algorithm)


def test_command_line_overrides_win_over_the_campaign_block():
    cfg = compose_run_config(["campaign=protein_stability", "algorithm.beta=0.5", "algorithm.value.epochs=3",
                              "campaign.algorithms.vard.lr=0.002"])
    assert cfg.algorithm["beta"] == 0.5 and cfg.algorithm["value"]["epochs"] == 3
    assert cfg.algorithm["value"]["patience"] == 3, "the rest of the block still applies"
    assert cfg.algorithm["lr"] == 0.002, "a block can be changed from the command line"


def test_the_run_config_keeps_what_was_applied_not_the_blocks():
    cfg = compose_config("config", ["campaign=molecule_pmo"])
    assert "algorithms" in cfg.campaign
    run = to_run_config(cfg)
    assert not hasattr(run.campaign, "algorithms")
    assert run.applied_tuning == "campaign_file:molecule_pmo.algorithms.vard"
    assert run.algorithm["value_data"] == "replay"
    # a mapping whose block for its algorithm was never applied is refused, not silently dropped
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw["applied_tuning"] = None
    with pytest.raises(ValueError, match="campaign.algorithms.vard was not applied"):
        to_run_config(raw)


@pytest.mark.parametrize("override, message", [
    ("+campaign.algorithms.vardd.beta=1", "algorithms.vardd is not a registered algorithm; registered: "),
    ("+campaign.algorithms.ddpo=3", "algorithms.ddpo must be a mapping"),
])
def test_a_misspelt_or_malformed_block_is_an_error(tmp_path, capsys, override, message):
    assert main(["run", "campaign=toy_linear", override, f"out_dir={tmp_path}/x"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
