"""Fault injection: a campaign killed with SIGKILL at chosen and random instants, then resumed.

A small VARD campaign on the toy model runs in a subprocess, scored by a slow-ish plain
function oracle that appends one line to a marker file per real call (before it computes),
so the marker counts every call paid, across every attempt. The parent kills the
subprocess with SIGKILL during the reference evaluation and value-data scoring, during
training (value refreshes and updates), while a checkpoint is being written (the runner
makes fsync slow, a slow disk, so the write takes long enough to be hit), and during the
final evaluation; then it runs the same command until it finishes. Checked against an
uninterrupted run of the same command:

(a) the final state is the same: summary.json (every entry but wall_seconds), the
    weights in model_final.pt, metrics.csv (but wall time), call_history.csv, the final designs;
(b) the real oracle calls over all attempts exceed the uninterrupted run's by at most
    one per kill (the in-process executor with chunks of one design has one call in flight);
(c) summary.json reports the calls paid for the run's results: oracle_calls and
    eval_oracle_calls equal the uninterrupted run's (a call in flight at a kill returns no
    result; it is paid again and counted once).

The default suite kills four times; the slow variant kills at least 20 times at random.
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from vardbio.model.checkpoint import read_checkpoint

ORACLE_MODULE = '''
"""The fault test's oracle: a plain function; each real call adds a line to $FAULT_MARKER."""
import os
import time

import numpy as np


def slow_score(x):
    fd = os.open(os.environ["FAULT_MARKER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"call\\n")
    finally:
        os.close(fd)
    time.sleep(float(os.environ.get("FAULT_CALL_SECONDS", "0.004")))
    return -float(np.sum((np.asarray(x, dtype=np.float64) - 1.0) ** 2))
'''

RUNNER = '''
"""A zygote: imports torch and vardbio once, then forks one child per job line on stdin
(JSON: out_dir, log file, environment) that runs or resumes the fault test's campaign.
It prints "started <pid>"; the child is reaped only on the line "reap" (so its pid stays
its own until then, and the test may SIGKILL it safely), then "ended <pid> <status>"."""
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
_fsync = os.fsync


def slow_fsync(fd):  # a slow disk: checkpoint writes take long enough to be killed in
    time.sleep(float(os.environ.get("FAULT_FSYNC_SECONDS", "0")))
    _fsync(fd)


os.fsync = slow_fsync

import vardbio  # noqa: E402
import vardbio.campaign.trainer  # noqa: E402,F401
import vardbio_models.toy  # noqa: E402,F401
from fault_oracle import slow_score  # noqa: E402

import torch  # noqa: E402

torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (2 s)


def run(job):
    os.environ.update(job["env"])
    config = vardbio.VARDConfig(beta=0.5, lr=1e-3, batch_size=16, value_samples=96, refresh_every=2,
                                refresh_samples=16)
    trainer = vardbio.Trainer("toy", vardbio.FunctionOracle(slow_score, name="slow_score"), config,
                              model_options={"dataset": "gaussian2"}, iterations=6, eval_samples=64,
                              checkpoint_every=2, out_dir=job["out"], seed=3, progress=False,
                              report=job["report"], torch_threads=1)
    trainer.train()


print("ready", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 0
        try:
            run(job)
        except BaseException:  # noqa: BLE001 - reported through the exit status and the log
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(f"started {pid}", flush=True)
    assert sys.stdin.readline().strip() == "reap"
    _, status = os.waitpid(pid, 0)
    print(f"ended {pid} {status}", flush=True)
os._exit(0)  # no interpreter teardown
'''

# Real calls of one uninterrupted run, by phase (eval_samples, value_samples, two refreshes).
INITIAL_EVAL, VALUE_DATA, REFRESHES, FINAL_EVAL = 64, 96, 32, 64
TOTAL = INITIAL_EVAL + VALUE_DATA + REFRESHES + FINAL_EVAL


class Harness:
    """Runs the campaign in children of one zygote process and kills them at chosen instants."""

    def __init__(self, folder: Path, fsync_seconds: float = 0.05):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fault_oracle.py").write_text(textwrap.dedent(ORACLE_MODULE))
        (folder / "fault_runner.py").write_text(textwrap.dedent(RUNNER))
        self.folder, self.log, self.attempts = folder, [], 0
        env = {**os.environ, "FAULT_FSYNC_SECONDS": str(fsync_seconds), "OMP_NUM_THREADS": "1"}
        self.zygote = subprocess.Popen([sys.executable, str(folder / "fault_runner.py")], env=env, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.zygote.stdout.readline().strip() == "ready", self.zygote.stderr.read()

    def close(self) -> None:
        self.zygote.stdin.close()
        self.zygote.wait(30)

    def _start(self, out: Path, marker: Path, report: bool) -> tuple[int, Path]:
        self.attempts += 1
        log = self.folder / f"attempt{self.attempts}.log"
        job = {"out": str(out), "log": str(log), "report": report, "env": {"FAULT_MARKER": str(marker)}}
        self.zygote.stdin.write(json.dumps(job) + "\n")
        self.zygote.stdin.flush()
        word, pid = self.zygote.stdout.readline().split()
        assert word == "started"
        return int(pid), log

    def _reap(self, pid: int) -> int:
        self.zygote.stdin.write("reap\n")
        self.zygote.stdin.flush()
        word, ended, status = self.zygote.stdout.readline().split()
        assert word == "ended" and int(ended) == pid
        return int(status)

    def run_to_end(self, out: Path, marker: Path, report: bool = False) -> str:
        """Run (or resume) the campaign until it finishes; its stderr and stdout."""
        pid, log = self._start(out, marker, report)
        while not exited(pid):
            time.sleep(0.002)
        status = self._reap(pid)
        assert status == 0, log.read_text()[-3000:]
        return log.read_text()

    def attempt(self, out: Path, marker: Path, plan: tuple, report: bool = False) -> dict | None:
        """Start the campaign and SIGKILL it when the plan's trigger(pid, calls, seconds) fires;
        the kill's record, or None when the campaign finished first."""
        label, trigger = plan
        pid, log = self._start(out, marker, report)
        started, calls_at_start = time.monotonic(), calls_paid(marker)
        kill = None
        while not exited(pid):
            calls = calls_paid(marker)
            if trigger(pid, calls, time.monotonic() - started):
                in_write = writing_checkpoint(out, pid)
                os.kill(pid, signal.SIGKILL)  # a child of this harness, not reaped yet: its pid is its own
                kill = {"plan": label, "phase": phase_of(in_write, calls, calls > calls_at_start),
                        "calls_before": calls, "seconds": round(time.monotonic() - started, 2)}
                break
            time.sleep(0.0005)
        status = self._reap(pid)
        if kill is None:
            assert status == 0, log.read_text()[-3000:]
            return None
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (status, log.read_text())
        kill["calls_after"] = calls_paid(marker)
        self.log.append(kill)
        return kill


def exited(pid: int) -> bool:
    """True once the (unreaped) child has exited: a zombie."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")


def calls_paid(marker: Path) -> int:
    try:
        return marker.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def writing_checkpoint(out: Path, pid: int) -> bool:
    """True while process `pid` has a checkpoint's temporary file open in out/checkpoints."""
    try:
        names = os.listdir(out / "checkpoints")
    except FileNotFoundError:
        return False
    return any(n.startswith(".last") and n.endswith(".tmp") and f".{pid}." in n for n in names)


def phase_of(in_write: bool, calls: int, called: bool) -> str:
    if in_write:
        return "checkpoint write"
    if not called:
        return "start-up or replay (no new call yet)"
    if calls <= INITIAL_EVAL:
        return "reference evaluation"
    if calls <= INITIAL_EVAL + VALUE_DATA:
        return "value-data scoring"
    if calls <= TOTAL - FINAL_EVAL:
        return "training"
    return "final evaluation"


def at_calls(target: int, label: str = "at a call count"):
    return label, lambda pid, calls, seconds: calls >= target


def after_calls_then(target: int, delay: float, label: str):
    """Fires `delay` seconds after `target` calls were reached (training makes few calls)."""
    reached: list[float] = []

    def trigger(pid, calls, seconds):
        if calls >= target and not reached:
            reached.append(seconds)
        return bool(reached) and seconds >= reached[0] + delay
    return label, trigger


def in_checkpoint_write(out: Path, label: str = "in a checkpoint write"):
    """Fires as soon as this attempt has a checkpoint's temporary file (the slow fsync keeps
    it there for a while)."""
    return label, lambda pid, calls, seconds: writing_checkpoint(out, pid)


def at_time(seconds_from_start: float):
    return "at a random time", lambda pid, calls, seconds: seconds >= seconds_from_start


def _rows(path: Path, drop: str) -> list[dict]:
    with path.open() as fh:
        return [{k: v for k, v in row.items() if k != drop} for row in csv.DictReader(fh)]


def check_chain(whole: Path, reference_calls: int, part: Path, marker: Path, kills: list[dict]) -> dict:
    """Checks (a)-(c) of the module docstring on a finished interrupted run; its figures."""
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, part))
    a.pop("wall_seconds"), b.pop("wall_seconds")
    assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    wa = read_checkpoint(whole / "model_final.pt")["state_dict"]
    wb = read_checkpoint(part / "model_final.pt")["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(whole / "metrics.csv", "wall_seconds") == _rows(part / "metrics.csv", "wall_seconds")
    for name in ("call_history.csv", "designs_final.csv", "reward_terms_final.csv"):
        assert (whole / name).read_bytes() == (part / name).read_bytes(), name
    leftovers = [p.name for p in (part / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left: {leftovers}"
    paid = calls_paid(marker)
    # (b) every call beyond the uninterrupted run's was in flight at a kill (one per kill at most)
    assert reference_calls <= paid <= reference_calls + len(kills), (paid, reference_calls, kills)
    # (c) the summary counts what the run's results cost, as the uninterrupted run's does
    assert b["oracle_calls"] + b["eval_oracle_calls"] == reference_calls == TOTAL
    return {"kills": len(kills), "reference_calls": reference_calls, "calls_paid": paid,
            "calls_paid_twice": paid - reference_calls, "phases": sorted({k["phase"] for k in kills})}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The zygote and an uninterrupted run of the campaign (its out_dir and real calls)."""
    folder = tmp_path_factory.mktemp("faults")
    harness = Harness(folder)
    whole, marker = folder / "whole", folder / "whole.calls"
    harness.run_to_end(whole, marker)
    harness.whole, harness.reference_calls = whole, calls_paid(marker)
    yield harness
    harness.close()


def test_kills_in_every_phase_lose_nothing(harness, tmp_path):
    """Four kills (value-data scoring, training, a checkpoint write, the final evaluation);
    after the training kill the newest checkpoint is also truncated: the resume falls back
    to last.prev.pt and says so in one line."""
    part, marker = tmp_path / "part", tmp_path / "part.calls"
    rng = random.Random(0)
    kills = [harness.attempt(part, marker, at_calls(INITIAL_EVAL + rng.randint(10, VALUE_DATA - 10),
                                                    "during value-data scoring")),
             # after the value refresh of iteration 2 (so two checkpoints exist), in an update
             harness.attempt(part, marker, after_calls_then(INITIAL_EVAL + VALUE_DATA + REFRESHES // 2 + 1, 0.01,
                                                            "during training"))]
    last = part / "checkpoints" / "last.pt"
    assert (part / "checkpoints" / "last.prev.pt").is_file(), "two checkpoints were written before the kill"
    last.write_bytes(last.read_bytes()[:1000])
    kills.append(harness.attempt(part, marker, in_checkpoint_write(part)))
    log = (harness.folder / f"attempt{harness.attempts}.log").read_text()
    notice = [line for line in log.splitlines() if "last.prev.pt" in line]
    assert len(notice) == 1 and "truncated" in notice[0] and str(last) in notice[0], log
    kills.append(harness.attempt(part, marker, at_calls(TOTAL - FINAL_EVAL + rng.randint(8, FINAL_EVAL - 8),
                                                        "during the final evaluation")))
    harness.run_to_end(part, marker)
    assert all(kills), harness.log
    figures = check_chain(harness.whole, harness.reference_calls, part, marker, kills)
    print("fault injection:", figures, harness.log)
    assert [k["phase"] for k in kills] == ["value-data scoring", "training", "checkpoint write",
                                           "final evaluation"], harness.log


@pytest.mark.slow
def test_twenty_random_kills_lose_nothing(harness, tmp_path):
    """Rounds of one campaign each (writing its report too), killed at random instants (a
    random call count ahead, the start of a checkpoint write, or a random time after the
    start) until an attempt finishes; rounds go on until at least 20 kills were made."""
    rng = random.Random(int(os.environ.get("FAULT_SEED", "20261201")))
    rounds: list[dict] = []
    while sum(r["kills"] for r in rounds) < 20:
        part, marker = tmp_path / f"part{len(rounds)}", tmp_path / f"part{len(rounds)}.calls"
        kills: list[dict] = []
        while True:
            done, choice = calls_paid(marker), rng.random()
            if choice < 0.55:
                plan = at_calls(done + rng.randint(1, max(1, TOTAL - done)))
            elif choice < 0.75:
                plan = in_checkpoint_write(part)
            else:
                plan = at_time(rng.uniform(0.0, 2.5))
            kill = harness.attempt(part, marker, plan, report=True)
            if kill is None:
                break
            kills.append(kill)
            assert len(kills) < 60, "the run makes no progress between kills"
        assert (part / "report.md").is_file()
        rounds.append(check_chain(harness.whole, harness.reference_calls, part, marker, kills))
    print("fault injection (slow):", rounds, harness.log)
