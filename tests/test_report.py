"""Run reports: rendered at the end of a campaign and on demand, plots that show metrics.csv."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from vardbio.campaign.outputs import read_metrics_csv
from vardbio.campaign.report import figures, read_vectors, write_report
from vardbio.campaign.runner import run_campaign
from vardbio.cli import compose_config, main


def _line(fig, gid):
    found = [line for ax in fig.axes for line in ax.lines if line.get_gid() == gid]
    assert len(found) == 1, f"no line {gid}"
    return np.asarray(found[0].get_xdata(), float), np.asarray(found[0].get_ydata(), float)


def _run(out, algorithm, *extra):
    return run_campaign(compose_config("config", [
        "campaign=toy_linear", f"algorithm={algorithm}", f"out_dir={out}", "progress=false",
        "campaign.eval_samples=128", "campaign.oracle_budget=256", "algorithm.batch_size=16", *extra]))


@pytest.fixture(scope="module")
def vard_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vard")
    summary = _run(out, "vard", "campaign.iterations=8", "algorithm.value_samples=128",
                   "algorithm.refresh_every=4", "algorithm.refresh_samples=64", "tensorboard=true")
    return out, summary


def test_report_is_written_at_the_end_of_a_campaign(vard_run):
    out, summary = vard_run
    text = (out / "report.md").read_text()
    assert text.startswith("# toy_linear / vard (seed 0)")
    for name in ("reward", "kl", "value_r2", "designs"):
        png = out / "report" / f"{name}.png"
        assert f"report/{name}.png" in text
        width, height = Image.open(png).size
        assert width > 300 and height > 300
    assert f"| reward mean | {summary['reward_initial']['mean']:.4g} | {summary['reward_final']['mean']:.4g} |" in text


def test_plots_show_the_numbers_in_metrics_csv(vard_run):
    out, summary = vard_run
    rows = read_metrics_csv(out / "metrics.csv")
    column = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    figs = figures(out)
    x, y = _line(figs["reward"], "iter_value_mean")
    np.testing.assert_array_equal(x, column["iteration"])
    np.testing.assert_array_equal(y, column["value_mean"])
    x, y = _line(figs["kl"], "iter_kl")
    np.testing.assert_array_equal(y, column["kl_step_mean"] * summary["sampling_steps"])
    x, y = _line(figs["reward"], "eval_mean")
    np.testing.assert_array_equal(x, [0, summary["oracle_calls"]])
    np.testing.assert_array_equal(y, [summary["reward_initial"]["mean"], summary["reward_final"]["mean"]])
    x, y = _line(figs["reward"], "eval_top10")
    np.testing.assert_array_equal(y, [summary["reward_initial"]["top10"], summary["reward_final"]["top10"]])
    _, y = _line(figs["kl"], "eval_kl")
    assert y[-1] == summary["kl_to_reference"]
    # the refresh at iteration 4 spent 64 more oracle calls and refitted the value head
    x, y = _line(figs["value_r2"], "refresh_r2")
    refreshed = np.isfinite(column["value_r2"])
    np.testing.assert_array_equal(y[refreshed], column["value_r2"][refreshed])
    assert column["oracle_calls"][3] == 128 and column["oracle_calls"][4] == 192
    bars = [p.get_height() for ax in figs["value_r2"].axes for p in ax.patches if p.get_gid() == "value_r2_bucket"]
    np.testing.assert_allclose(bars, summary["value_r2_per_bucket"])


def test_ddpo_report_plots_the_batch_reward_against_oracle_calls(tmp_path):
    _run(tmp_path, "ddpo", "campaign.iterations=4")
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    x, y = _line(figures(tmp_path)["reward"], "batch_reward_mean")
    np.testing.assert_array_equal(x, [r["oracle_calls"] for r in rows])
    np.testing.assert_array_equal(y, [r["reward_mean"] for r in rows])
    assert list(x) == [16, 32, 48, 64]


def test_tensorboard_logs_the_metrics_rows(vard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = vard_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = read_metrics_csv(out / "metrics.csv")
    logged = events.Scalars("train/value_mean")
    assert [e.step for e in logged] == [int(r["iteration"]) for r in rows]
    np.testing.assert_allclose([e.value for e in logged], [r["value_mean"] for r in rows], rtol=1e-6)
    assert "eval/reward_final_mean" in events.Tags()["scalars"]


def test_scatter_gallery_shows_the_designs_files(vard_run):
    out, _ = vard_run
    xy, rewards = read_vectors(out / "designs_final.csv")
    with (out / "designs_final.csv").open() as fh:
        first = next(csv.DictReader(fh))
    assert xy.shape == (128, 2) and xy[0, 0] == float(first["x0"]) and rewards[0] == float(first["reward"])


def test_report_on_demand_from_the_command_line(vard_run, capsys):
    out, _ = vard_run
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file() and "wrote" in capsys.readouterr().out
    assert main(["report", f"run_dir={out}"]) == 2
    assert "usage: vardbio report <run_dir>" in capsys.readouterr().err


def test_molecule_gallery_from_an_sdf(vard_run, tmp_path):
    """The molecule plugin's own SDF of real molecules: depicted, best reward first."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from vardbio_models.molecule import plugin

    out, _ = vard_run
    run = tmp_path / "mol_run"
    run.mkdir()
    (run / "metrics.csv").write_text((out / "metrics.csv").read_text())
    summary = json.loads((out / "summary.json").read_text())
    summary["design_files"] = [{"file": "designs_final.sdf", "kind": "molecules", "when": "final"}]
    (run / "summary.json").write_text(json.dumps(summary))
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    mols = []
    for i, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mols.append(mol)
    plugin.write_designs(mols, np.array([0.2, 0.9, 0.5]), run / "designs_final")
    text = write_report(run).read_text()
    assert Image.open(run / "report" / "molecules.png").size[0] > 400
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == ["Oc1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CCO"]
    assert "Best 3 of 3 final molecules" in text


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no summary.json" in capsys.readouterr().err


def test_domain_metrics_plot_says_what_each_measures_in_its_units():
    """One panel per described metric with a value before and after: its label and
    direction as the title, its units on the y axis; undescribed entries are not guessed at."""
    from vardbio.campaign.report import quality_figure

    summary = {"valid_fraction_initial": 0.5, "valid_fraction": 0.75, "diversity_initial": 9.0,
               "diversity": 8.0, "ca_clashes_initial": 2.0, "ca_clashes": 1.0, "novelty_initial": 0.3,
               "novelty": 0.4, "domain_metrics": {
                   "diversity": {"label": "diversity (mean pairwise CA RMSD)", "units": "Å", "higher_is_better": True},
                   "ca_clashes": {"label": "CA clashes", "units": "count", "higher_is_better": False},
                   "valid_fraction": {"label": "valid", "units": "fraction", "higher_is_better": None}}}
    fig = quality_figure(summary)
    panels = [ax for ax in fig.axes if ax.patches]
    assert [ax.get_title() for ax in panels] == ["diversity (mean pairwise CA RMSD) ↑", "CA clashes ↓", "valid"]
    assert [ax.get_ylabel() for ax in panels] == ["Å", "count", "fraction"]
    bars = [[p.get_height() for p in ax.patches] for ax in panels]
    assert bars == [[9.0, 8.0], [2.0, 1.0], [0.5, 0.75]]
    assert quality_figure({"diversity_initial": 1.0, "diversity": 2.0}) is None


def test_report_tables_reward_terms_with_units_and_directions(vard_run, tmp_path):
    """The reward terms' oracle units and preferred directions come from the oracles, the
    way the reward pushes each from its weight and transform."""
    import warnings

    from vardbio.reward import Linear, Reward, RewardTerm
    from vardbio_oracles.chem import QEDOracle, SAScore

    out, _ = vard_run
    text = (out / "report.md").read_text()
    assert "| toy_linear (toy_linear) | – | ↑ | up |" in text
    with pytest.warns(UserWarning, match="rewards higher sa_score scores \\(SA score \\(1-10\\)\\), but for that "
                                         "oracle lower is better"):
        Reward([RewardTerm(SAScore())])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward = Reward([RewardTerm(SAScore(), -1.0), RewardTerm(SAScore(), transform=Linear(6.0, 1.0), name="sa01"),
                         RewardTerm(QEDOracle())])
    assert [t.direction for t in reward.terms] == [-1, -1, 1]


def test_a_summary_that_does_not_describe_its_files_gets_no_gallery(vard_run, tmp_path):
    out, _ = vard_run
    run = tmp_path / "old_run"
    run.mkdir()
    summary = json.loads((out / "summary.json").read_text())
    del summary["design_files"]
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "designs_final.csv").write_text((out / "designs_final.csv").read_text())
    text = write_report(run).read_text()
    assert "does not describe the design files" in text and "report/designs.png" not in text


def test_report_of_a_molecule_campaign(tmp_path):
    """A short campaign on the shipped molecule model: the report renders its plots, the
    molecule gallery and the validity bars, and the reward plot carries metrics.csv's rows."""
    out = tmp_path / "mol"
    summary = run_campaign(compose_config("config", [
        "campaign=molecule_qed", f"out_dir={out}", "progress=false", "campaign.iterations=2",
        "campaign.eval_samples=24", "algorithm.value_samples=32", "campaign.oracle_budget=48"]))
    text = (out / "report.md").read_text()
    for name in ("reward", "kl", "value_r2", "quality", "molecules"):
        assert (out / "report" / f"{name}.png").is_file() and f"report/{name}.png" in text, name
    rows = read_metrics_csv(out / "metrics.csv")
    x, y = _line(figures(out)["reward"], "iter_value_mean")
    np.testing.assert_array_equal(y, [r["value_mean"] for r in rows])
    assert "valid_fraction" in summary
