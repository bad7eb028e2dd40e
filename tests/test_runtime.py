"""The oracle runtime: executors, crash isolation, timeouts, retries, cache, budget."""
from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from vardbio.reward import OracleBudgetExceeded, OracleLedger
from vardbio.reward.cache import OracleCache
from vardbio.reward.oracle import Oracle, OracleError, OracleResult, PerDesignOracle
from vardbio.reward.runtime import OracleRuntime


class Square(PerDesignOracle):
    """x -> x**2; fails on negative numbers (a deterministic NaN)."""

    name = "square"

    def score_one(self, x):
        if x < 0:
            raise OracleError("negative input")
        return float(x) ** 2

    def design_key(self, x):
        return f"{float(x):.6f}"


class Crashy(PerDesignOracle):
    """Kills its own process on 13, hangs on 99, else returns x + 1."""

    name = "crashy"
    cpu_heavy = True

    def score_one(self, x):
        if x == 13:
            os._exit(3)
        if x == 99:
            time.sleep(60)
        return x + 1.0


class Segfault(PerDesignOracle):
    """A real segmentation fault on input 7."""

    name = "segfault"

    def score_one(self, x):
        if x == 7:
            import ctypes
            ctypes.string_at(0)
        return float(x)


class FlakyOnce(Oracle):
    """Crashes the worker the first time it sees 5 (a marker file records it)."""

    name = "flaky"

    def __init__(self, marker):
        self.marker = str(marker)

    def score(self, designs):
        out = []
        for x in designs:
            if x == 5 and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            out.append(float(x))
        return OracleResult(np.array(out))


@pytest.fixture
def pool_runtime():
    rt = OracleRuntime(executor="process", max_workers=2, timeout=20)
    yield rt
    rt.close()


def test_inprocess_scores_and_counts():
    rt = OracleRuntime(executor="inprocess")
    res = rt.evaluate(Square(), [1, 2, -1, 2])
    np.testing.assert_array_equal(res.values[[0, 1, 3]], [1, 4, 4])
    assert np.isnan(res.values[2]) and "negative input" in res.reasons[2]
    # the duplicate 2 is served from the batch, not called twice
    assert rt.ledger.calls["square"] == 3 and rt.ledger.cache_hits["square"] == 1
    assert rt.ledger.failures["square"] == 1
    assert res.provenance["oracle"] == "square" and res.provenance["real_calls"] == 3


def test_worker_killed_mid_batch_only_that_design_fails(pool_runtime):
    designs = [1, 2, 13, 4, 5, 6]
    res = pool_runtime.evaluate(Crashy(), designs)
    np.testing.assert_array_equal(res.values[[0, 1, 3, 4, 5]], [2, 3, 5, 6, 7])
    assert np.isnan(res.values[2])
    assert "worker process died" in res.reasons[2] and "exit code 3" in res.reasons[2]
    assert all(r is None for i, r in enumerate(res.reasons) if i != 2)
    # the runtime keeps working after the crash
    again = pool_runtime.evaluate(Crashy(), [7, 8])
    np.testing.assert_array_equal(again.values, [8, 9])


def test_chunk_with_a_crash_is_isolated():
    with OracleRuntime(executor="process", max_workers=2, chunk_size=4, timeout=20) as rt:
        res = rt.evaluate(Crashy(), list(range(10, 18)))
    bad = [i for i, x in enumerate(range(10, 18)) if x == 13]
    assert np.isnan(res.values[bad]).all()
    good = np.isfinite(res.values)
    assert good.sum() == 7
    np.testing.assert_array_equal(res.values[good], [x + 1 for x in range(10, 18) if x != 13])


def test_segfault_is_isolated(pool_runtime):
    res = pool_runtime.evaluate(Segfault(), [6, 7, 8])
    np.testing.assert_array_equal(res.values[[0, 2]], [6, 8])
    assert np.isnan(res.values[1]) and "SIGSEGV" in res.reasons[1]


def test_timeout_gives_nan_and_reason():
    # 8 s: room for a worker's start on a loaded machine (1.5 s failed there), far below the hang
    with OracleRuntime(executor="process", max_workers=2, timeout=8) as rt:
        t0 = time.monotonic()
        res = rt.evaluate(Crashy(), [1, 99, 3])
        elapsed = time.monotonic() - t0
    assert elapsed < 30
    np.testing.assert_array_equal(res.values[[0, 2]], [2, 4])
    assert np.isnan(res.values[1]) and "timed out after 8 s" in res.reasons[1]


def test_thread_executor_timeout():
    with OracleRuntime(executor="thread", max_workers=2, timeout=0.5) as rt:
        class Slow(PerDesignOracle):
            name = "slow"

            def score_one(self, x):
                time.sleep(2 if x else 0)
                return 1.0
        res = rt.evaluate(Slow(), [0, 1])
    assert res.values[0] == 1.0 and np.isnan(res.values[1]) and "timed out" in res.reasons[1]


def test_retry_recovers_a_transient_crash(tmp_path):
    with OracleRuntime(executor="process", max_workers=1, retries=1, timeout=20) as rt:
        res = rt.evaluate(FlakyOnce(tmp_path / "m"), [4, 5, 6])
        np.testing.assert_array_equal(res.values, [4, 5, 6])
        assert rt.ledger.calls["flaky"] == 4  # the crashed attempt is a real call too
    with OracleRuntime(executor="process", max_workers=1, retries=0, timeout=20) as rt:
        res = rt.evaluate(FlakyOnce(tmp_path / "n"), [5])
        assert np.isnan(res.values[0])


def test_budget_checked_before_real_calls(tmp_path):
    rt = OracleRuntime(executor="inprocess", budget=3, cache=tmp_path / "c.sqlite")
    rt.evaluate(Square(), [1, 2])
    with pytest.raises(OracleBudgetExceeded):
        rt.evaluate(Square(), [3, 4])
    assert rt.ledger.total_calls == 2
    # cached designs cost nothing, so they still go through
    res = rt.evaluate(Square(), [1, 2, 3])
    np.testing.assert_array_equal(res.values, [1, 4, 9])
    assert rt.ledger.total_calls == 3 and rt.ledger.cache_hits["square"] == 2
    with pytest.raises(ValueError, match="either a ledger or a budget"):
        OracleRuntime(ledger=OracleLedger(), budget=3)


def test_dask_executor(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        rt = OracleRuntime(executor=client.get_executor(), max_workers=2, chunk_size=2)
        res = rt.evaluate(Square(), [1, 2, 3, -4, 5])
    np.testing.assert_array_equal(res.values[[0, 1, 2, 4]], [1, 4, 9, 25])
    assert np.isnan(res.values[3]) and "negative input" in res.reasons[3]
    assert rt.ledger.calls["square"] == 5


def test_user_process_pool_executor():
    with cf.ProcessPoolExecutor(2) as ex:
        rt = OracleRuntime(executor=ex, max_workers=2)
        res = rt.evaluate(Square(), [3, 4])
    np.testing.assert_array_equal(res.values, [9, 16])


def test_cache_survives_process_restart(tmp_path):
    """A second Python process reads the first one's cache and makes zero real calls."""
    db = tmp_path / "cache.sqlite"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_runtime import Square
        from vardbio.reward.runtime import OracleRuntime
        rt = OracleRuntime(executor="inprocess", cache={str(db)!r})
        res = rt.evaluate(Square(), [1, 2, 3, -1])
        print(json.dumps({{"calls": rt.ledger.total_calls,
                          "hits": rt.ledger.cache_hits["square"],
                          "values": [None if v != v else v for v in res.values.tolist()],
                          "reason": res.reasons[3]}}))
    """)
    import json
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True,
                                      text=True, check=True).stdout) for _ in range(2)]
    assert runs[0]["calls"] == 4 and runs[0]["hits"] == 0
    assert runs[1]["calls"] == 0 and runs[1]["hits"] == 4
    assert runs[0]["values"] == runs[1]["values"] == [1, 4, 9, None]
    assert runs[1]["reason"] == runs[0]["reason"]
    prov = OracleCache(db).provenance(Square().identity())
    assert prov == {"oracle": "square", "version": "1", "params": {}}


def test_crash_is_not_cached(tmp_path):
    with OracleRuntime(executor="process", max_workers=1, cache=tmp_path / "c.sqlite",
                       timeout=20) as rt:
        rt.evaluate(Crashy(), [13, 1])
        assert len(rt.cache) == 1
        rt.evaluate(Crashy(), [13, 1])
        assert rt.ledger.calls["crashy"] == 3 and rt.ledger.cache_hits["crashy"] == 1


def _write_many(path, start):
    rt = OracleRuntime(executor="inprocess", cache=path)
    for k in range(20):
        rt.evaluate(Square(), [start + k])
    return rt.ledger.total_calls


def test_cache_concurrent_writers(tmp_path):
    db = tmp_path / "shared.sqlite"
    with cf.ProcessPoolExecutor(2) as ex:
        calls = list(ex.map(_write_many, [db, db, db, db], [0, 100, 200, 300]))
    assert calls == [20] * 4
    assert len(OracleCache(db)) == 80


def test_bad_runtime_configuration():
    with pytest.raises(ValueError, match="unknown executor"):
        OracleRuntime(executor="gpu")
    with pytest.raises(ValueError, match="inprocess"):
        OracleRuntime(executor="inprocess", timeout=1)
    with pytest.raises(ValueError, match="retries"):
        OracleRuntime(retries=-1)


def test_progress_bar_for_long_batches(capsys):
    rt = OracleRuntime(executor="inprocess", progress=5)
    rt.evaluate(Square(), list(range(10)))
    assert "oracle" in capsys.readouterr().err


_SLOW_ORACLE = '''
import os, threading, time

def slow(marker, run, x):
    """Appends 'run start x' to the marker file at each real call, then takes 0.1 s."""
    with open(marker, "a") as f:
        f.write(f"{run} start {x} {os.getpid()}-{threading.get_ident()}\\n")
    time.sleep(0.1)
    return float(x)
'''

_SCORE_BATCH = '''
import concurrent.futures as cf, functools, json, sys
sys.path.insert(0, sys.argv[1])
from slowmark import slow
from vardbio.reward.oracle import FunctionOracle
from vardbio.reward.runtime import OracleRuntime

if __name__ == "__main__":
    folder, kind, run, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    executor = cf.ThreadPoolExecutor(2) if kind == "user" else kind
    rt = OracleRuntime(executor=executor, max_workers=2, cache=folder + "/cache.sqlite",
                       progress=None)
    oracle = FunctionOracle(functools.partial(slow, folder + "/marker", run), name="slow")
    res = rt.evaluate(oracle, list(range(n)))
    print(json.dumps({"calls": rt.ledger.total_calls, "hits": rt.ledger.cache_hits["slow"],
                      "values": res.values.tolist()}))
'''


@pytest.mark.parametrize("kind", ["inprocess", "thread", "process", "user"])
def test_results_are_durable_when_killed_mid_batch(tmp_path, kind):
    """kill -9 in the middle of a batch: every result already returned is in the cache, so
    the rerun pays only for the designs not scored yet (plus the calls that were in flight)."""
    import json
    import signal

    (tmp_path / "slowmark.py").write_text(_SLOW_ORACLE)
    (tmp_path / "score.py").write_text(_SCORE_BATCH)
    marker = tmp_path / "marker"
    n, k = 12, 4
    workers = 1 if kind == "inprocess" else 2

    def starts(run):
        text = marker.read_text() if marker.exists() else ""
        return [line.split()[2] for line in text.splitlines() if line.startswith(f"{run} start")]

    def command(run):
        return [sys.executable, str(tmp_path / "score.py"), str(tmp_path), kind, str(run), str(n)]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command(1), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # A call starts only after the one `workers` places before it was stored, so k + workers
    # starts mean at least k results are in the cache.
    deadline = time.monotonic() + 60
    while len(starts(1)) < k + workers:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.15)  # an orphaned pool worker may finish the call it was given

    cached = OracleCache(tmp_path / "cache.sqlite")
    scored = {key for key, _ in cached._connect().execute("SELECT design_key, value FROM scores")}
    assert len(scored) >= k
    assert all(v == float(key.split(":")[1]) for key, v in
               cached._connect().execute("SELECT design_key, value FROM scores"))
    cached.close()

    second = json.loads(subprocess.run(command(2), env=env, capture_output=True, text=True,
                                       check=True).stdout)
    assert second["values"] == [float(x) for x in range(n)]
    assert second["hits"] == len(scored) and second["calls"] == n - len(scored)
    assert len(starts(2)) == n - len(scored)
    assert not set(starts(2)) & {key.split(":")[1] for key in scored}
    in_flight = len(starts(1)) - len(scored)
    assert 0 <= in_flight <= workers
    assert len(starts(1)) + len(starts(2)) <= n + workers


class InterruptAt3(Square):
    """Square, but Ctrl-C arrives while 3 is being scored."""

    def score_one(self, x):
        if x == 3:
            raise KeyboardInterrupt
        return super().score_one(x)


def test_interrupted_batch_keeps_its_results_and_counts_its_calls(tmp_path):
    rt = OracleRuntime(executor="inprocess", cache=tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        rt.evaluate(InterruptAt3(), [1, 2, 3, 4])
    # 1, 2 and the interrupted 3 were real calls; 1 and 2 are already cached
    assert rt.ledger.calls["square"] == 3 and len(rt.cache) == 2
    res = rt.evaluate(Square(), [1, 2, 3, 4])
    np.testing.assert_array_equal(res.values, [1, 4, 9, 16])
    assert rt.ledger.calls["square"] == 5 and rt.ledger.cache_hits["square"] == 2
