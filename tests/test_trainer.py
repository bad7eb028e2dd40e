"""vardbio.Trainer, the library path: the README's snippet verbatim (reproducible from its
seed, resumable without new oracle calls), plain-object inputs, and the package's shape
(a light `import vardbio`, no import cycle)."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import vardbio
from vardbio.campaign.outputs import read_metrics_csv
from vardbio.campaign.trainer import ResumeMismatchError, Trainer
from vardbio.model.checkpoint import load_verified, save_verified
from vardbio.reward import FunctionOracle
from vardbio_models.toy import LinearReward, plugin

ROOT = Path(__file__).resolve().parent.parent
# the summary keys of every run, from `vardbio run` or the Trainer (plugins may add more)
SUMMARY_KEYS = {
    "campaign", "algorithm", "seed", "oracle_calls", "oracle_budget", "oracle_failures",
    "eval_oracle_calls", "reward_initial", "reward_final", "components_initial", "components_final",
    "processes", "sampling_steps", "frozen_final_steps", "kl_to_reference", "kl_note", "value_r2", "value_r2_per_bucket",
    "value_r2_bucket_edges", "value_nan_dropped", "iterations", "wall_seconds", "final_failures",
    "budget_counting", "budget_spent", "unique_valid_designs", "auc_top1", "auc_top10", "auc_top100",
    "top10_curve", "valid_fraction_initial", "valid_fraction",
    "optimum", "objective_j", "objective_kl_note", "achievable_gain_fraction", "achievable_gain_note",
    "reward_terms", "design_files",
}
RUN_FILES = {"config.yaml", "metrics.csv", "summary.json", "report.md", "designs_initial.csv",
             "designs_final.csv", "reward_terms_initial.csv", "reward_terms_final.csv", "model_final.pt",
             "checkpoints/last.pt", "oracle_cache.sqlite", "call_history.csv", "report/reward.png", "report/kl.png"}


def readme_snippet() -> str:
    """The first Python block of README's "Using it from Python" section, verbatim."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Using it from Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def run_snippet(directory, monkeypatch, capsys):
    """Execute the snippet as a user's script in `directory`; (printed output, its globals)."""
    directory.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(directory)
    capsys.readouterr()
    namespace = {"__name__": "__main__"}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    return capsys.readouterr().out, namespace


def counting_oracle_calls(monkeypatch):
    """Count every real call of a FunctionOracle (cache hits never reach the function)."""
    calls = []
    score_one = FunctionOracle.score_one
    monkeypatch.setattr(FunctionOracle, "score_one", lambda self, d: calls.append(1) or score_one(self, d))
    return calls


def test_readme_snippet_is_short_reproducible_and_resumes(tmp_path, monkeypatch, capsys):
    code = [line for line in readme_snippet().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 6, "the README promises fine-tuning in at most 6 lines"
    calls = counting_oracle_calls(monkeypatch)
    rng_before = torch.get_rng_state()
    out_a, first = run_snippet(tmp_path / "a", monkeypatch, capsys)
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's random state is left alone"
    summary = first["summary"]
    assert len(calls) == summary["oracle_calls"] + summary["eval_oracle_calls"] > 0
    out_b, second = run_snippet(tmp_path / "b", monkeypatch, capsys)
    assert out_a == out_b and out_a.strip()
    run_a = tmp_path / "a" / first["trainer"].out_dir
    run_b = tmp_path / "b" / second["trainer"].out_dir
    for name in ("designs_initial.csv", "designs_final.csv", "reward_terms_final.csv"):
        assert (run_a / name).read_bytes() == (run_b / name).read_bytes(), name
    rows_a, rows_b = (read_metrics_csv(run / "metrics.csv") for run in (run_a, run_b))
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows_a] == \
        [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows_b]
    a, b = (torch.load(run / "model_final.pt", weights_only=False)["state_dict"] for run in (run_a, run_b))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {k: v for k, v in summary.items() if k != "wall_seconds"} == \
        {k: v for k, v in second["summary"].items() if k != "wall_seconds"}
    assert summary["reward_final"]["mean"] > summary["reward_initial"]["mean"] + 5

    # the same lines again in the same place: the finished run's summary, no oracle call
    calls.clear()
    out_again, third = run_snippet(tmp_path / "a", monkeypatch, capsys)
    assert out_again == out_a and calls == [] and third["summary"] == summary

    # the files `vardbio run` writes
    run = run_a
    written = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert RUN_FILES <= written, RUN_FILES - written
    assert set(json.loads((run / "summary.json").read_text())) == SUMMARY_KEYS
    assert (run / "report.md").read_text().startswith("# toy / vard (seed 0)")


def _small(out_dir, reward, algorithm=None, **settings):
    return Trainer("toy", reward, algorithm or vardbio.VARDConfig(beta=0.5, lr=1e-3, value_samples=64, batch_size=16),
                   model_options={"dataset": "gaussian2"}, iterations=4, eval_samples=32, out_dir=out_dir,
                   progress=False, report=False, **settings)


def test_interrupted_run_resumes_to_the_same_state(tmp_path, monkeypatch):
    def first(x):
        return float(x[0])

    whole = _small(tmp_path / "whole", first, checkpoint_every=1).train()

    class Interrupted(Exception):
        pass

    def stop_after_two(i, metrics):
        if i == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _small(tmp_path / "part", first, checkpoint_every=1).train(on_iteration=stop_after_two)
    calls = counting_oracle_calls(monkeypatch)
    resumed = _small(tmp_path / "part", first, checkpoint_every=1).train()
    assert len(calls) == 32, "only the final evaluation calls the oracle again"
    assert resumed["oracle_calls"] == whole["oracle_calls"] == 64
    assert resumed["eval_oracle_calls"] == whole["eval_oracle_calls"] == 64
    assert resumed["reward_final"] == whole["reward_final"]
    with pytest.raises(ResumeMismatchError, match="different configuration"):
        _small(tmp_path / "part", first, checkpoint_every=1, seed=1).train()
    with pytest.raises(ResumeMismatchError, match="different configuration"):
        _small(tmp_path / "part", first, vardbio.VARDConfig(beta=0.25, value_samples=64)).train()


def test_a_run_made_before_a_setting_existed_resumes_at_its_default(tmp_path, monkeypatch):
    """A checkpoint whose record lacks a setting vardbio gained later is the same run when the
    setting is at its default now, and another run when it is not."""
    def first(x):
        return float(x[0])

    summary = _small(tmp_path, first).train()
    state_path = tmp_path / "checkpoints" / "last.pt"
    state = load_verified(state_path, what="resume state")
    record = OmegaConf.to_container(OmegaConf.create(state["identity"]))
    del record["algorithm"]["step_gradient"], record["algorithm"]["value"]["time_buckets"]
    save_verified({**state, "identity": OmegaConf.to_yaml(OmegaConf.create(record))}, state_path)
    calls = counting_oracle_calls(monkeypatch)
    assert _small(tmp_path, first).train() == summary and not calls
    with pytest.raises(ResumeMismatchError, match="different configuration"):
        _small(tmp_path, first, vardbio.VARDConfig(beta=0.5, lr=1e-3, value_samples=64, batch_size=16,
                                                   step_gradient="score_function")).train()


def test_plain_objects_model_oracles_and_algorithms(tmp_path):
    model = plugin.load({"dataset": "gaussian2"})
    oracles = [LinearReward(dim=2), lambda x: float(x[1]) ** 2]
    summary = Trainer(model, oracles, vardbio.BestOfNConfig(n=2), eval_samples=16, out_dir=tmp_path / "bon",
                      oracle_budget=32, progress=False, report=False).train()
    assert summary["algorithm"] == "best_of_n" and summary["campaign"] == "toy"
    assert set(summary["components_final"]) == {"toy_linear", "<lambda>"}
    assert summary["oracle_calls"] == 32  # two oracles, 16 designs, best of 2
    trainer = Trainer("toy", "toy_linear", "vard", model_options={"dataset": "gaussian8"}, iterations=2,
                      eval_samples=16, out_dir=tmp_path / "vard", progress=False, report=False)
    assert trainer.algorithm.name == "vard" and trainer.out_dir == tmp_path / "vard"
    assert "analytic" in trainer.train(), "the toy plugin's extras for a linear reward"


def test_wall_seconds_include_the_final_designs(tmp_path, monkeypatch):
    """Best-of-N does its work while drawing the final designs; the summary's wall time counts it."""
    import time

    from vardbio.algorithms.best_of_n import BestOfN

    drawn = BestOfN.final_samples
    monkeypatch.setattr(BestOfN, "final_samples", lambda self, n, g: time.sleep(1.5) or drawn(self, n, g))
    summary = Trainer(plugin.load({"dataset": "gaussian2"}), LinearReward(dim=2), vardbio.BestOfNConfig(n=2),
                      eval_samples=8, out_dir=tmp_path, progress=False, report=False).train()
    assert summary["wall_seconds"] >= 1.5


@pytest.mark.parametrize("args, kwargs, message", [
    (("toy", len, object()), {}, "algorithm must be an algorithm's config"),
    (("toy", [42]), {}, "reward item 0 must be"),
    (("toy", []), {}, "at least one oracle"),
    (("toy", [len, len]), {}, "distinct names"),
    (("no_such_model", len), {}, "unknown model 'no_such_model'"),
    (("toy", len), {"iterations": -1}, "iterations must be an integer >= 0"),
    (("toy", len), {"value_input": "blurred"}, "value_input must be one of"),
    (("toy", vardbio.Reward([vardbio.RewardTerm(FunctionOracle(len))])), {"aggregation": "geometric"},
     "a Reward brings its own aggregation"),
])
def test_bad_input_is_named(tmp_path, args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Trainer(*args, out_dir=tmp_path, progress=False, **kwargs)


def test_a_built_model_takes_no_loading_options(tmp_path):
    with pytest.raises(ValueError, match="model_options and checkpoint are for a model given by name"):
        Trainer(plugin.load({"dataset": "gaussian2"}), len, model_options={"dataset": "gaussian8"},
                out_dir=tmp_path)


def test_import_vardbio_is_light_and_exports_the_library():
    code = ("import sys, vardbio; heavy = [m for m in ('torch', 'hydra', 'numpy') if m in sys.modules]; "
            "print(heavy, vardbio.__version__, sorted(vardbio.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] "), out
    for name in ("Trainer", "VARDConfig", "DDPOConfig", "BestOfNConfig", "FunctionOracle", "Reward",
                 "registry", "__version__"):
        assert name in vardbio.__all__ and getattr(vardbio, name) is not None
    assert vardbio.registry.available("algorithm") == ["best_of_n", "ddpo", "guidance", "svdd", "vard"]


def _module_imports(path: Path, module: str, package: bool) -> set[str]:
    """vardbio modules that `path` imports when it is loaded (module-level statements,
    including those under try/if, but not under `if TYPE_CHECKING`)."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if package else 0)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(node, (ast.If, ast.Try, ast.With, ast.ExceptHandler)) and hasattr(node, field):
                    visit(getattr(node, field))

    visit(ast.parse(path.read_text()).body)
    return {name for name in found if name == "vardbio" or name.startswith("vardbio.")}


def test_the_import_graph_of_vardbio_has_no_cycle():
    source = ROOT / "vardbio"
    modules = {}
    for path in source.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    graph = {}
    for name, (path, package) in modules.items():
        targets = {t for t in _module_imports(path, name, package) if t in modules}
        graph[name] = targets - {name}
    assert "vardbio.campaign.trainer" in graph and graph["vardbio.cli"], "the graph was read"

    visiting, done, cycles = [], set(), []

    def walk(node):
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            walk(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        walk(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_summary_reports_pmo_auc_valid_fractions_and_the_call_history(tmp_path):
    """Under PMO counting, the summary's AUCs are recomputed exactly from call_history.csv."""
    import csv

    import vardbio
    from vardbio.metrics import top_k_auc

    def score(x):
        if x[0] > 0.5:
            raise ValueError("out of range")
        return float(x.sum())

    trainer = vardbio.Trainer("toy", score, vardbio.BestOfNConfig(n=4), iterations=5, oracle_budget=300,
                              budget_counting="unique_valid", eval_samples=64, out_dir=tmp_path,
                              progress=False, report=False)
    s = trainer.train()
    rows = list(csv.DictReader((tmp_path / "call_history.csv").open()))
    rewards = [float(r["reward"]) for r in rows if r["reward"]]
    assert s["budget_counting"] == "unique_valid" and s["unique_valid_designs"] == len(rewards) <= 300
    assert len(rows) > len(rewards)  # failed designs are in the history but are not calls
    assert s["auc_top10"] == pytest.approx(top_k_auc(rewards, 10, 300))
    assert 0 < s["valid_fraction_initial"] < 1 and s["valid_fraction"] == 1.0  # best-of-N keeps valid ones
    assert s["top10_curve"][-1][0] == len(rewards)


class SpreadPlugin(type(plugin)):
    """The toy plugin, summarising its designs with a further oracle (toy_quadratic: the
    squared distance from the origin) that it asks the campaign's runtime for."""

    def summarize(self, evaluation):
        from vardbio.model.evaluation import DomainSummary, Metric

        spread = [-float(evaluation.oracles.values("toy_quadratic", d.designs, {"dim": 2}).mean())
                  for d in (evaluation.final, evaluation.reference)]
        return DomainSummary([Metric("spread", *spread, label="mean squared distance from the origin",
                                     units="squared units of x", higher_is_better=None)])


def test_oracle_calls_of_a_plugin_summary_are_paid_through_the_runtime(tmp_path, real_oracle_calls):
    """Every real oracle call, the plugin's further oracle included, is what summary.json
    says was spent: oracle_calls + eval_oracle_calls; rerunning the finished run calls none."""
    calls = real_oracle_calls

    def train(out_dir):
        return Trainer(plugin.load({"dataset": "gaussian2"}), LinearReward(dim=2),
                       vardbio.VARDConfig(beta=0.5, value_samples=32, batch_size=8), plugin=SpreadPlugin(),
                       iterations=2, eval_samples=16, out_dir=out_dir, progress=False, report=False,
                       oracle_runtime={"executor": "inprocess"}).train()

    summary = train(tmp_path / "run")
    assert sum(calls.values()) == summary["oracle_calls"] + summary["eval_oracle_calls"]
    assert calls["toy_quadratic"] == 32 and summary["eval_oracle_calls"] == 2 * 16 + 32
    assert summary["spread"] > 0 and summary["spread_initial"] > 0
    assert summary["domain_metrics"]["spread"]["label"] == "mean squared distance from the origin"
    calls.clear()
    assert train(tmp_path / "run") == summary and not calls
