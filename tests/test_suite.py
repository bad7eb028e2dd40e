"""The suite bench (vardbio.campaign.suite): a tiny PMO suite end to end, its tables and sums,
reuse of finished runs, and the published table's transcription."""
from __future__ import annotations

import csv
import math

import pytest

from vardbio.campaign import suite
from vardbio.campaign.suite import (PMO_ALL, PMO_DEV, load_published, main, read_csv, run_suite,
                                    split_overrides)

TASKS = ["qed", "celecoxib_rediscovery"]
ALGORITHMS = ["vard", "best_of_n"]
BUDGET = 40
TINY = [
    "campaign.eval_samples=8", "campaign.iterations=2", "campaign.model.options.sampling_steps=8",
    "progress=false", "report=false",
    "vard:algorithm.value_samples=20", "vard:algorithm.refresh_every=1",
    "vard:algorithm.refresh_samples=10", "vard:algorithm.batch_size=4",
    "vard:algorithm.steps_per_update=1", "vard:algorithm.value.epochs=2",
    "best_of_n:algorithm.n=2",
]


def test_published_table_matches_the_stated_sums():
    """The transcription: every PMO task of the three methods, and the development-suite sums
    the molecules issue states (REINVENT 4.227, GenMol 5.325); GenMol's 23 tasks sum to the
    18.362 its paper prints."""
    table = load_published()
    for method in suite.PUBLISHED_METHODS:
        assert {t for t, m in table if m == method} >= set(PMO_ALL)
    dev = {m: sum(table[(t, m)][0] for t in PMO_DEV) for m in suite.PUBLISHED_METHODS}
    assert dev["REINVENT"] == pytest.approx(4.227, abs=1e-9)
    assert dev["GenMol"] == pytest.approx(5.325, abs=1e-9)
    assert sum(v[0] for (t, m), v in table.items() if m == "GenMol") == pytest.approx(18.362, abs=1e-9)
    with suite.default_published_csv().open(newline="") as fh:
        assert all(r["source"] for r in csv.DictReader(fh))


def test_task_lists_match_the_oracle():
    from vardbio_oracles.pmo import TASKS as ORACLE_TASKS

    assert sorted(PMO_ALL) == list(ORACLE_TASKS) and len(PMO_ALL) == 20
    assert set(PMO_DEV) <= set(PMO_ALL) and len(PMO_DEV) == 7


def test_overrides_are_routed_and_reserved_keys_refused():
    shared, own = split_overrides(["campaign.iterations=2", "vard:algorithm.beta=0.5",
                                   "best_of_n:algorithm.n=2", "out_dir_note=a:b"], ["vard", "best_of_n"])
    assert shared == ["campaign.iterations=2", "out_dir_note=a:b"]
    assert own == {"vard": ["algorithm.beta=0.5"], "best_of_n": ["algorithm.n=2"]}
    for bad in (["seed=1"], ["algorithm=ddpo"], ["campaign.task=qed"], ["vard:out_dir=x"],
                ["ddpo:algorithm.lr=1"]):
        with pytest.raises(ValueError):
            split_overrides(bad, ["vard", "best_of_n"])
    with pytest.raises(ValueError, match="unknown PMO task"):
        run_suite(["not_a_task"], ["vard"], [0], 10, "unused")


def test_tiny_suite_writes_tables_and_reuses_finished_runs(tmp_path, monkeypatch):
    result = run_suite(TASKS, ALGORITHMS, [0], BUDGET, tmp_path, overrides=TINY, suite_name="tiny")
    rows = read_csv(tmp_path / "suite.csv")
    assert [(r["task"], r["algorithm"], r["seed"]) for r in rows] == [
        (t, a, 0) for t in TASKS for a in ALGORITHMS]
    for r in rows:
        assert 0 <= r["auc_top1"] <= 1 and 0 <= r["auc_top10"] <= r["auc_top1"] + 1e-12
        assert 0 < r["budget_spent"] <= BUDGET and r["oracle_calls"] >= r["budget_spent"]
        assert r["valid_fraction"] == 1.0 and r["wall_seconds"] > 0
        assert (tmp_path / r["task"] / f"{r['algorithm']}_s0" / "summary.json").is_file()

    # the sums, recomputed from the two CSV files
    table = load_published()
    expected = {a: sum(r["auc_top10"] for r in rows if r["algorithm"] == a) for a in ALGORITHMS}
    expected.update({m: sum(table[(t, m)][0] for t in TASKS) for m in suite.PUBLISHED_METHODS})
    assert result["sums"] == pytest.approx(expected)
    assert expected["REINVENT"] == pytest.approx(0.941 + 0.713)

    md = (tmp_path / "suite.md").read_text()
    assert "| task | vard | best_of_n | REINVENT | Graph GA | GenMol |" in md
    qed_vard = next(r for r in rows if r["task"] == "qed" and r["algorithm"] == "vard")
    assert f"| qed | {qed_vard['auc_top10']:.3f} ± 0.000 |" in md
    assert "| **Sum** | " + " | ".join(f"**{expected[m]:.3f}**" for m in
                                        [*ALGORITHMS, *suite.PUBLISHED_METHODS]) + " |" in md
    assert "0.941 ± 0.000" in md and "Gao et al." in md and "GenMol: A Drug Discovery" in md
    assert f"- REINVENT: {expected['REINVENT']:.3f}" in md

    # a rerun, from the command line, reuses every finished run: no oracle call at all
    from vardbio_oracles.pmo import PMOOracle

    calls = []
    original = PMOOracle.score_one
    monkeypatch.setattr(PMOOracle, "score_one", lambda self, d: calls.append(d) or original(self, d))
    again = main(["--tasks", ",".join(TASKS), "--algorithms", ",".join(ALGORITHMS), "--seeds", "0",
                  "--budget", str(BUDGET), "--out", str(tmp_path), *TINY])
    assert calls == []
    assert read_csv(tmp_path / "suite.csv") == rows
    assert again["sums"] == pytest.approx(result["sums"])
    assert all(math.isfinite(v) for v in again["sums"].values())


def test_vardbio_bench_runs_a_suite_from_the_command_line(tmp_path, capsys):
    """`vardbio bench suite=...` hands the suite keys to the suite runner and the rest to every run."""
    from vardbio.cli import main

    rc = main(["bench", "tasks=qed", "algorithms=best_of_n", "seeds=0", "budget=20", f"out={tmp_path}",
               "campaign.eval_samples=4", "campaign.model.options.sampling_steps=4", "best_of_n:algorithm.n=2"])
    assert rc == 0 and (tmp_path / "suite.md").is_file()
    assert "sum of mean AUC top-10" in capsys.readouterr().out
    again = ["bench", "tasks=qed,median1", "algorithms=best_of_n", "seeds=0", "budget=20", f"out={tmp_path}",
             "campaign.eval_samples=4", "campaign.model.options.sampling_steps=4", "best_of_n:algorithm.n=2"]
    assert main([*again, "finished_only=true"]) == 0 and not (tmp_path / "median1").exists()
    with pytest.raises(SystemExit, match="finished_only takes true or false"):
        main([*again, "finished_only=yes"])


def test_best_of_n_spends_the_suite_budget_and_finished_runs_tabulate_alone(tmp_path):
    """Without an algorithm.n override, best-of-N draws ceil(budget / eval_samples) candidates
    per design, so its candidates spend the whole budget (not n=8 times eval_samples); with
    --finished-only the suite tabulates the finished runs and starts no other."""
    import yaml

    assert suite.budget_filling_n(10_000, 512) == 20 and suite.budget_filling_n(40, 8) == 5
    assert suite.budget_filling_n(5, 8) == 1
    tiny = ["campaign.eval_samples=8", "campaign.model.options.sampling_steps=4", "progress=false",
            "report=false"]
    run_suite(["qed"], ["best_of_n"], [0], 40, tmp_path / "filled", overrides=tiny)
    config = yaml.safe_load((tmp_path / "filled" / "qed" / "best_of_n_s0" / "config.yaml").read_text())
    assert config["algorithm"]["n"] == 5
    # finished_only tabulates what has run and starts nothing
    tabulated = main(["--tasks", "qed,median1", "--algorithms", "best_of_n", "--seeds", "0", "--budget", "40",
                      "--out", str(tmp_path / "filled"), "--finished-only", *tiny])
    assert [(r["task"], r["algorithm"]) for r in tabulated["rows"]] == [("qed", "best_of_n")]
    assert not (tmp_path / "filled" / "median1").exists()
    assert "| median1 | — |" in (tmp_path / "filled" / "suite.md").read_text()
    with pytest.raises(ValueError, match="no finished run"):
        run_suite(["median1"], ["best_of_n"], [0], 40, tmp_path / "empty", overrides=tiny, finished_only=True)
    run_suite(["qed"], ["best_of_n"], [0], 40, tmp_path / "told", overrides=[*tiny, "best_of_n:algorithm.n=2"])
    config = yaml.safe_load((tmp_path / "told" / "qed" / "best_of_n_s0" / "config.yaml").read_text())
    assert config["algorithm"]["n"] == 2
