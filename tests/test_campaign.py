"""Campaigns end to end through the CLI: outputs, the analytic check, resume, bad input."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from vardbio.campaign.config import compose_config
from vardbio.campaign.runner import run_campaign
from vardbio.campaign.trainer import ResumeMismatchError
from vardbio.cli import main
from vardbio.model.checkpoint import read_checkpoint

SUMMARY_KEYS = {"campaign", "algorithm", "seed", "oracle_calls", "reward_initial", "reward_final",
                "kl_to_reference", "value_r2", "wall_seconds", "analytic"}


def _small(out_dir, *extra):
    return ["campaign=toy_linear", f"out_dir={out_dir}", "progress=false", "campaign.iterations=6",
            "campaign.eval_samples=128", "campaign.oracle_budget=256", "algorithm.value_samples=256",
            "algorithm.batch_size=16", "checkpoint_every=2", *extra]


def test_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *_small(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert set(summary["reward_final"]) >= {"mean", "median", "top10"}
    # one unweighted term: its mean raw score is the mean reward
    for when in ("initial", "final"):
        assert summary[f"components_{when}"]["toy_linear"] == pytest.approx(summary[f"reward_{when}"]["mean"])
    assert summary["oracle_calls"] == 256 and summary["eval_oracle_calls"] == 256
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("iteration,oracle_calls,wall_seconds") and len(lines) == 7
    config = OmegaConf.load(out / "config.yaml")
    assert config.campaign.name == "toy_linear" and "algorithms" not in config.campaign
    assert config.applied_tuning == "campaign_file:toy_linear.algorithms.vard" and config.algorithm.beta == 0.25
    for name in ("designs_initial.csv", "designs_final.csv", "model_final.pt", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    terms = (out / "reward_terms_final.csv").read_text().splitlines()
    assert terms[0] == "design,toy_linear,reward,failure" and len(terms) == 1 + 128
    score, reward = terms[1].split(",")[1:3]
    assert score == reward, "one unweighted term: the score is the reward"
    assert read_checkpoint(out / "model_final.pt")["spec"]["plugin"] == "toy"
    assert "toy_linear / vard" in capsys.readouterr().out


def test_toy_linear_reaches_the_analytic_optimum(tmp_path):
    """The shipped campaign: final reward within 10% of the analytic shift, KL within 25%."""
    summary = run_campaign(compose_config("config", ["campaign=toy_linear", f"out_dir={tmp_path}",
                                                     "progress=false"]))
    initial, final = summary["reward_initial"]["mean"], summary["reward_final"]["mean"]
    optimum, kl_opt = summary["analytic"]["reward_optimum"], summary["analytic"]["kl_optimum"]
    assert optimum - initial > 2.0, "the optimum moves the reward by several standard deviations"
    assert abs(final - optimum) <= 0.10 * abs(optimum - initial)
    assert abs(summary["kl_to_reference"] - kl_opt) <= 0.25 * kl_opt


def test_resume_gives_the_same_final_state_as_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    run_campaign(compose_config("config", _small(whole)))

    class Interrupted(Exception):
        pass

    def crash_after_three(i, metrics):
        if i == 2:
            raise Interrupted

    part = tmp_path / "part"
    with pytest.raises(Interrupted):
        run_campaign(compose_config("config", _small(part)), on_iteration=crash_after_three)
    resumed = run_campaign(compose_config("config", _small(part)))
    assert resumed["iterations"] == 6 and resumed["oracle_calls"] == 256, "no oracle call is repeated"
    a = read_checkpoint(whole / "model_final.pt")["state_dict"]
    b = read_checkpoint(part / "model_final.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.csv").read_text().count("\n") == (part / "metrics.csv").read_text().count("\n")


def test_resume_refuses_a_different_config(tmp_path):
    run_campaign(compose_config("config", _small(tmp_path)))
    with pytest.raises(ResumeMismatchError, match="different configuration"):
        run_campaign(compose_config("config", _small(tmp_path, "seed=1")))


def test_ddpo_and_best_of_n_spend_the_same_budget(tmp_path):
    calls = {}
    for algo in ("ddpo", "best_of_n"):
        summary = run_campaign(compose_config("config", [
            "campaign=toy_linear", f"algorithm={algo}", f"out_dir={tmp_path / algo}", "progress=false",
            "campaign.iterations=100", "campaign.eval_samples=32", "campaign.oracle_budget=256"]))
        assert summary["algorithm"] == algo
        calls[algo] = summary["oracle_calls"]
    assert calls == {"ddpo": 256, "best_of_n": 256}  # best-of-8 pays for 32 designs


def test_bench_writes_json_and_plot(tmp_path, capsys):
    args = ["bench", "campaign=toy_linear", f"out_dir={tmp_path}", "progress=false",
            "campaign.iterations=3", "campaign.eval_samples=64", "campaign.oracle_budget=128",
            "algorithm.beta=0.3"]
    assert main(args) == 0
    assert "bench: ignoring algorithm.beta=0.3 (each algorithm runs with its own preset" in capsys.readouterr().out
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert set(bench["summaries"]) == {"vard", "ddpo", "best_of_n"}
    assert all(s["oracle_calls"] <= 128 for s in bench["summaries"].values())
    assert (tmp_path / "bench.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["run", "campaign=no_such_campaign"], "no_such_campaign"),
    (["run", "campaign.no_such_key=1"], "no_such_key"),
    (["run", "algorithm=no_such_algorithm"], "no_such_algorithm"),
    (["run", "algorithm.betta=0.2"], "betta"),
    (["run", "algorithm.beta=0"], "beta > 0"),
    (["run", "+campaign.model.options.eta=0"], "eta > 0"),
    (["run", "campaign.model.name=no_such_model"], "unknown model 'no_such_model'; available: "),
    (["run", "campaign.reward.0.oracle=nope"], "unknown oracle 'nope'; available:"),
    (["sample", "checkpoint=/no/such/file.pt"], "checkpoint not found"),
    (["run", "+campaign.model.value_head.input=blurred"], "model.value_head.input must be one of"),
])
def test_bad_input_gives_a_clear_message(tmp_path, capsys, args, message):
    assert main([*args, f"out_dir={tmp_path}/x"] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    other = tmp_path / "other.pt"
    assert main(["pretrain", "model=toy_gaussian2", f"out={other}", "+model.options.train_steps=5"]) == 0
    args = ["run", f"out_dir={tmp_path}/x", f"campaign.model.checkpoint={other}"]
    assert main(args) == 2
    assert "was made for model" in capsys.readouterr().err
    assert main(["run", f"out_dir={tmp_path}/y", f"campaign.model.checkpoint={tmp_path / 'x' / 'config.yaml'}"]) == 2


def test_all_nan_rewards_stop_with_the_reason(tmp_path, capsys):
    """A reward failing on every design of the first chunk stops there (not after paying for
    the whole evaluation and the value data)."""
    args = ["run", *_small(tmp_path), "campaign.reward.0.params.dim=3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "failed on all of the first 64 reference designs" in err and "length 3" in err
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def _files(folder):
    """{relative path: (mtime_ns, bytes)} of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_reprints_its_summary_and_changes_no_file(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", *_small(out, "campaign.iterations=2", "campaign.eval_samples=64", "algorithm.value_samples=64",
                           "report=true")]
    assert main(args) == 0
    first = capsys.readouterr().out
    before = _files(out)
    assert {"summary.json", "report.md", "checkpoints/last.pt", "checkpoints/last.prev.pt"} <= set(before)
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "holds this finished run" in again and first.strip() in again
    assert _files(out) == before, "a rerun of a finished run changes no file"
    summary = json.loads((out / "summary.json").read_text())

    # summary.json lost (a run killed while writing its results): the results are written
    # again (summary.json, the report), nothing else
    (out / "summary.json").unlink()
    assert main(args) == 0 and "holds this finished run" in capsys.readouterr().out
    after = _files(out)
    assert after["summary.json"][1] == before["summary.json"][1]
    results = {k for k in after if k in ("summary.json", "report.md") or k.startswith("report/")}
    assert {k: v for k, v in after.items() if k not in results} == \
        {k: v for k, v in before.items() if k not in results}

    # --force runs it again: new files, the same results, and the calls the first run paid
    # still counted (its results come from the cache)
    assert main([*args[:1], "--force", *args[1:]]) == 0
    rerun = json.loads((out / "summary.json").read_text())
    assert "holds this finished run" not in capsys.readouterr().out
    assert _files(out)["model_final.pt"][0] > before["model_final.pt"][0]
    rerun.pop("wall_seconds"), summary.pop("wall_seconds")
    assert rerun == summary


def test_damaged_checkpoints_are_refused_and_force_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", *_small(out, "campaign.iterations=2", "campaign.eval_samples=32", "algorithm.value_samples=32")]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("last.pt", "last.prev.pt"):
        path = out / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:-100])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "cannot resume: resume state" in err[0] and "truncated" in err[0]
    assert "--force" in err[0] and str(out / "checkpoints" / "last.pt") in err[0]
    assert main([*args, "--force"]) == 0
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["oracle_calls"] == summary["oracle_calls"] and rerun["reward_final"] == summary["reward_final"]


def test_sample_creates_its_out_dir(tmp_path):
    out = tmp_path / "new" / "folder"
    assert main(["sample", "model=toy", "n=3", f"out_dir={out}"]) == 0
    assert (out / "designs.csv").read_text().count("\n") == 4


def test_sample_writes_designs(tmp_path, capsys):
    assert main(["sample", "model=toy", "n=5", f"out_dir={tmp_path}"]) == 0
    assert (tmp_path / "designs.csv").read_text().count("\n") == 6


def test_reward_terms_table_marks_failures(tmp_path):
    """A failed term is an empty cell with its reason, never a 0."""
    import numpy as np

    from vardbio.campaign.outputs import write_reward_terms_csv

    path = tmp_path / "terms.csv"
    write_reward_terms_csv({"qed": np.array([0.5, np.nan]), "sa": np.array([3.25, 2.0])},
                           np.array([2.0, np.nan]), [None, "qed: sanitisation failed"], path)
    assert path.read_text().splitlines() == ["design,qed,sa,reward,failure", "0,0.5,3.25,2,",
                                             "1,,2,,qed: sanitisation failed"]


def test_value_head_on_the_denoised_estimate_runs_a_campaign(tmp_path):
    out = tmp_path / "denoised"
    assert main(["run", *_small(out, "+campaign.model.value_head.input=denoised")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["value_r2"] > 0.1 and summary["reward_final"]["mean"] > summary["reward_initial"]["mean"] + 0.5


def test_keep_best_reports_and_saves_the_kept_weights(tmp_path):
    out = tmp_path / "keep_best"
    assert main(["run", *_small(out, "campaign.oracle_budget=320", "algorithm.refresh_every=2",
                                "algorithm.refresh_samples=32", "algorithm.keep_best=true")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    kept = summary["kept_weights"]
    assert kept["updates"] in (0, 2, 4) and summary["oracle_calls"] == 256 + 2 * 32
    saved = read_checkpoint(out / "model_final.pt")["state_dict"]
    best = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["algorithm"]["best"]
    assert best["updates"] == kept["updates"]
    assert all(torch.equal(saved[f"denoiser.{k}"], v) for k, v in best["weights"].items())
