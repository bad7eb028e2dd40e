"""Resuming a run: its checkpoint read safely, and the oracle calls it paid counted exactly.

The resume state (checkpoints/last.pt) is written with `save_verified(keep_previous=True)`,
so the state it replaces stays beside it as checkpoints/last.prev.pt. `read_resume_state`
refuses a truncated, corrupted or foreign last.pt with one line naming the file and the
problem and falls back to last.prev.pt when that one verifies (saying so in one line). When
neither can be used it raises: the run is never started over silently (an oracle call that
is not in the cache would be paid again); the user passes --force (Trainer(force=True)) or
deletes the checkpoints folder to start over.

Paid calls across a kill. A checkpoint holds the oracle ledgers as they were when it was
written, but the results of calls made after it survive a kill: the oracle runtime stores
each one in the run's SQLite cache as its call returns. A resumed run replays from the
checkpoint with the same random streams, asks for the same designs again and gets those
results from the cache for free, so a ledger restored from the checkpoint would count them
as cache hits and undercount what the run paid. `credit_paid_results` fixes this: at resume
it collects the cache rows of the run's oracles created after the checkpoint was written
(with no checkpoint yet, after the run first started: checkpoints/started.json). Each was
paid by an attempt of this run that was killed before its next checkpoint. `PaidCallCredit`
wraps the run's oracle runtime and, the first time the replay is served one of those rows
from the cache, records it as the real call it was (and as a failure when its score is
NaN) instead of a cache hit. The replayed ledgers then go through exactly the states of an
uninterrupted run (calls, cache hits, failures, the budget left at every decision), and
summary.json's oracle_calls and eval_oracle_calls are the calls paid for the run's results,
whatever the number of kills.

Not counted: a call in flight at a kill, whose result never reached the cache (at most one
chunk per worker, max_workers × chunk_size designs, per kill); it is paid again by the
replay and counted once. Rows are matched by oracle identity and design key, so a cache
shared with another run that scores the same designs with the same oracle at the same time
could be credited to this one; the default cache is the run's own file. Starting over with
--force keeps started.json (same configuration), so the rerun's summary again counts what
the run's results cost; deleting the checkpoints folder instead starts a new count, in
which results already in the cache are free cache hits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vardbio.model.checkpoint import CheckpointError, CheckpointMismatchError, load_verified, previous_path
from vardbio.reward.evaluator import OracleEvaluator
from vardbio.reward.oracle import Oracle, OracleResult
from vardbio.reward.runtime import OracleRuntime

STARTED_FILE = "started.json"
WHAT = "resume state"
_log = logging.getLogger("vardbio")


def _is_resume_state(obj: Any) -> bool:
    return isinstance(obj, dict) and "identity" in obj and "next_iteration" in obj


def _read_one(path: Path) -> dict[str, Any]:
    """The resume state at `path`; a CheckpointError naming the file when it is unusable.
    States written before checksums existed (plain torch.save) are accepted unverified."""
    state = load_verified(path, what=WHAT, legacy=_is_resume_state)
    if not _is_resume_state(state):
        held = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else \
            f"a {type(state).__name__}"
        raise CheckpointMismatchError(f"{WHAT} {path}: not a vardbio resume state (it holds {held})")
    state.setdefault("saved_at", path.stat().st_mtime)  # states from before saved_at was kept
    return state


def read_resume_state(path: Path) -> dict[str, Any] | None:
    """The newest usable resume state at `path` or, when that one is damaged, missing or
    foreign, at previous_path(path) (logged in one line); None when neither file exists.
    Raises CheckpointError (one line) when files exist but none can be used."""
    prev = previous_path(path)
    if not path.is_file() and not prev.is_file():
        return None
    try:
        return _read_one(path)
    except (CheckpointError, FileNotFoundError) as err:
        problem = " ".join(str(err).split())
    try:
        state = _read_one(prev)
    except (CheckpointError, FileNotFoundError) as err:
        fallback = " ".join(str(err).split()) if prev.is_file() else f"no previous {WHAT} {prev.name}"
        raise CheckpointError(
            f"cannot resume: {problem}; {fallback}. To start this run over (results already in "
            f"its oracle cache are reused, other calls are paid again) run it again with --force "
            f"(Trainer(..., force=True)) or delete {path.parent}") from None
    _log.warning("%s; resuming from the previous %s %s (iteration %d)", problem, WHAT, prev,
                 int(state["next_iteration"]))
    return state


_TEMPORARIES = (".last.pt.*.tmp", ".last.prev.pt.*.tmp", ".started.json.*.tmp")
_OUT_TEMPORARIES = (".model_final.pt.*.tmp", ".config.yaml.tmp", ".summary.json.tmp", "metrics.csv.tmp")


def remove_stale_temporaries(out_dir: Path) -> None:
    """Remove the temporary files a run killed while writing left in out_dir (the names
    save_verified and the Trainer write through; nothing else in out_dir is touched)."""
    for folder, patterns in ((out_dir / "checkpoints", _TEMPORARIES), (out_dir, _OUT_TEMPORARIES)):
        for pattern in patterns:
            for tmp in folder.glob(pattern):
                tmp.unlink(missing_ok=True)


def discard_resume_state(path: Path) -> None:
    """Remove the resume state and its previous copy (starting a run over)."""
    for p in (path, previous_path(path)):
        p.unlink(missing_ok=True)


def run_started_at(folder: Path, identity: str) -> float:
    """When the run with this identity first started in `folder` (its checkpoints folder),
    recorded in started.json before its first oracle call; written now when missing or when
    it belongs to another configuration."""
    path = folder / STARTED_FILE
    digest = hashlib.sha256(identity.encode()).hexdigest()
    try:
        record = json.loads(path.read_text())
        if record.get("identity_sha256") == digest:
            return float(record["time"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    now = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"identity_sha256": digest, "time": now}) + "\n")
    os.replace(tmp, path)
    return now


class PaidCallCredit(OracleEvaluator):
    """The run's OracleRuntime, with cache hits on results an interrupted attempt of the run
    paid for recorded as the real calls they were (once each; see the module docstring).

    unpaid: {(oracle identity, design key)} not yet counted by the restored ledgers; shared
    between the training and the evaluation reward, and emptied as the replay meets them.
    """

    def __init__(self, runtime: OracleRuntime, unpaid: set[tuple[str, str]]):
        super().__init__(runtime.ledger)
        self.runtime = runtime
        self.unpaid = unpaid

    def evaluate(self, oracle: Oracle, designs: Sequence[Any]) -> OracleResult:
        designs = list(designs)
        result = self.runtime.evaluate(oracle, designs)
        if not self.unpaid or result.from_cache is None:
            return result
        identity = oracle.identity()
        calls = failures = 0
        for i in np.flatnonzero(result.from_cache):
            try:
                key = (identity, oracle.design_key(designs[i]))
            except Exception:  # noqa: BLE001 - an unkeyable design is never cached
                continue
            if key in self.unpaid:
                self.unpaid.discard(key)
                calls += 1
                failures += int(math.isnan(result.values[i]))
        if calls:
            self.ledger.record(oracle.name, calls=calls, cache_hits=-calls, failures=failures)
        return result

    def close(self) -> None:
        self.runtime.close()


def results_paid_since(cache_path: str | os.PathLike, identities: Sequence[str],
                       since: float) -> set[tuple[str, str]]:
    """{(oracle identity, design key)} of the cache rows of these oracles created after
    `since` (unix time); empty when the cache file does not exist."""
    path = Path(cache_path)
    if not path.is_file() or not identities:
        return set()
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0)
    try:
        marks = ",".join("?" * len(identities))
        rows = conn.execute(
            f"SELECT o.identity, s.design_key FROM scores s JOIN oracles o ON o.oracle_id = s.oracle_id "
            f"WHERE s.created > ? AND o.identity IN ({marks})", (float(since), *identities)).fetchall()
    finally:
        conn.close()
    return {(identity, key) for identity, key in rows}


def credit_paid_results(rewards: Sequence[Any], since: float) -> int:
    """Wrap the OracleRuntime of each reward (Reward or CollectiveReward, on the process
    that calls the oracles) in a PaidCallCredit for the results its cache received after
    `since`; returns how many results will be credited (0: nothing changed)."""
    runtimes = [r.evaluator for r in rewards if isinstance(r.evaluator, OracleRuntime)
                and r.evaluator.cache is not None]
    if not runtimes:
        return 0
    identities = sorted({term.oracle.identity() for r in rewards for term in r.terms})
    unpaid = results_paid_since(runtimes[0].cache.path, identities, since)
    if unpaid:
        for reward in rewards:
            if isinstance(reward.evaluator, OracleRuntime) and reward.evaluator.cache is not None:
                reward.evaluator = PaidCallCredit(reward.evaluator, unpaid)
    return len(unpaid)


def close_runtime(reward: Any) -> None:
    """Stop the worker processes of a reward's oracle runtime (wrapped or not) and close its
    cache connection, which moves the cache's write-ahead log into its file now rather than
    whenever the object is collected (a later use reopens it)."""
    evaluator = reward.evaluator
    if isinstance(evaluator, PaidCallCredit):
        evaluator = evaluator.runtime
    if isinstance(evaluator, OracleRuntime):
        evaluator.close()
        if evaluator.cache is not None:
            evaluator.cache.close()
