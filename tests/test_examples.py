"""The scripts in examples/ run as a user would run them (small settings, subprocesses)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_finetune_with_vard(tmp_path):
    out = run("finetune_with_vard.py", "--iterations", 5, "--value-samples", 64, "--out", tmp_path, cwd=tmp_path)
    assert "value head fitted on 64 scored rollouts" in out
    assert "oracle calls for fine-tuning: 64 (evaluation before and after: 512)" in out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if "mean reward" in line}
    assert set(lines) == {"pretrained", "fine-tuned"}
    assert sum(line.startswith("design [") for line in out.splitlines()) == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 5 and (tmp_path / "report.md").is_file()
    again = run("finetune_with_vard.py", "--iterations", 5, "--value-samples", 64, "--out", tmp_path, cwd=tmp_path)
    assert again == out, "a second run returns the finished run's results"
    with (tmp_path / "designs_final.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 256 and set(rows[0]) == {"x0", "x1", "reward"}
    x, y, r = (float(rows[0][k]) for k in ("x0", "x1", "reward"))
    assert abs(r + ((x - 2) ** 2 + (y - 1) ** 2)) < 1e-4  # the function oracle's own score


def test_campaign_then_sample_the_fine_tuned_model(tmp_path):
    run_dir = tmp_path / "campaign"
    out = run("campaign_from_python.py", "campaign.iterations=3", "campaign.eval_samples=64",
              "campaign.oracle_budget=64", "algorithm.value_samples=64", f"out_dir={run_dir}", cwd=tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["oracle_calls"] == 64 and f"report: {run_dir}/report.md" in out
    assert json.loads(out[: out.rindex("}") + 1])["analytic"] == summary["analytic"]
    samples = tmp_path / "samples"
    out = run("sample_and_score.py", "--checkpoint", run_dir / "model_final.pt", "--n", 12,
              "--out", samples, cwd=tmp_path)
    assert "12 designs" in out and "real oracle calls 12, cache hits 12" in out
    assert (samples / "designs.csv").read_text().count("\n") == 13


def test_configs_readme_documents_every_key_and_preset():
    """configs/README.md names every shipped preset and every key of every config schema."""
    import dataclasses

    from vardbio.algorithms import BestOfNConfig, DDPOConfig, VARDConfig
    from vardbio.campaign.config import AccelerateSection, CampaignSection, ModelSection, RunConfig
    from vardbio.reward import RewardTermConfig, RuntimeConfig
    from vardbio.value.fitting import ValueFitConfig

    configs = EXAMPLES.parent / "configs"
    text = (configs / "README.md").read_text()
    for group in ("campaign", "model"):
        for preset in sorted((configs / group).glob("*.yaml")):
            assert f"`{preset.stem}`" in text, f"{group}/{preset.name} is not documented"
    for schema in (RunConfig, AccelerateSection, CampaignSection, ModelSection, RewardTermConfig,
                   RuntimeConfig, VARDConfig, ValueFitConfig, DDPOConfig, BestOfNConfig):
        for field in dataclasses.fields(schema):
            named = (f"`{field.name}`", f".{field.name}`", f"`{field.name}.")
            assert any(n in text for n in named), f"{schema.__name__}.{field.name} is not documented"
