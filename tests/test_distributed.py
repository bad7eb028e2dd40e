"""Two processes under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo).

The worker runs the real `vardbio run` command line in each process, with spies that count
(and then call through to) the toy oracle's scoring function and summary.json writes, and
saves its own process's final weights for comparison.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from vardbio_models import toy
    from vardbio.campaign import trainer
    from vardbio.cli import main

    counts = {"oracle": 0, "summary_writes": 0}
    score_one = toy.LinearReward.score_one
    def counting_score(self, design):
        counts["oracle"] += 1
        return score_one(self, design)
    toy.LinearReward.score_one = counting_score
    write_json = trainer.write_json
    def counting_write(data, path):
        counts["summary_writes"] += path.name == "summary.json"
        return write_json(data, path)
    trainer.write_json = counting_write
    built = []
    init = trainer.Trainer.__init__
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)
    trainer.Trainer.__init__ = recording_init

    spies, argv = sys.argv[1], sys.argv[2:]
    rc = main(["run", *argv])
    camp = built[0]
    rank = camp.dist.rank
    torch.save(camp.model.state_dict(), os.path.join(spies, f"weights{rank}.pt"))
    with open(os.path.join(spies, f"rank{rank}.json"), "w") as fh:
        json.dump({"rc": rc, "world": camp.dist.world_size, **counts,
                   "group_open": torch.distributed.is_initialized(),
                   "ledger_calls": camp.reward.ledger.total_calls}, fh)
''')


def launch(tmp_path, algorithm_args, processes=2):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    spies = tmp_path / "spies"
    spies.mkdir(exist_ok=True)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 1000),
           str(worker), str(spies), "campaign=toy_linear", f"out_dir={out}", "progress=false",
           "campaign.eval_samples=64", "campaign.oracle_runtime.executor=inprocess",
           "checkpoint_every=2", *algorithm_args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((spies / f"rank{r}.json").read_text()) for r in range(processes)]
    weights = [torch.load(spies / f"weights{r}.pt") for r in range(processes)]
    return out, ranks, weights


def test_two_processes_score_each_design_once_and_agree(tmp_path):
    out, ranks, weights = launch(tmp_path, [
        "algorithm=vard", "campaign.iterations=4", "campaign.oracle_budget=96",
        "algorithm.value_samples=96", "algorithm.batch_size=16"])
    summary = json.loads((out / "summary.json").read_text())
    assert [r["world"] for r in ranks] == [2, 2] and all(r["rc"] == 0 for r in ranks)
    # the run ends its process group: one left to interpreter exit can abort a finished run
    assert not any(r["group_open"] for r in ranks)
    assert summary["processes"] == 2
    # every design scored once, by the main process: 96 for the value fit, 64 + 64 evaluations
    assert summary["oracle_calls"] == 96 and summary["eval_oracle_calls"] == 128
    assert ranks[0]["oracle"] == 96 + 128 and ranks[1]["oracle"] == 0
    assert ranks[0]["ledger_calls"] == ranks[1]["ledger_calls"] == 96
    assert [r["summary_writes"] for r in ranks] == [1, 0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    final = torch.load(out / "model_final.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(final[k], weights[0][k]) for k in final)
    assert (out / "metrics.csv").read_text().count("\n") == 5
    assert (out / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, args, calls", [
    ("ddpo", ["algorithm.batch_size=16", "campaign.iterations=3"], 48),
    ("best_of_n", ["algorithm.n=4"], 64 * 4),
])
def test_two_processes_other_algorithms(tmp_path, algorithm, args, calls):
    out, ranks, weights = launch(tmp_path, [f"algorithm={algorithm}", *args])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["oracle_calls"] == calls
    assert ranks[0]["oracle"] == calls + summary["eval_oracle_calls"] and ranks[1]["oracle"] == 0
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
