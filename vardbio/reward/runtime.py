"""The oracle runtime: runs any oracle safely and economically on batches of designs.

`OracleRuntime` is an `OracleEvaluator`. For each batch it

1. keys every design with the oracle's `design_key` and serves what it can from the
   persistent cache (and from duplicates inside the batch) at no call cost;
2. checks the call budget in the ledger before any real call;
3. runs the remaining designs, in chunks, on an executor:
   - "process": our own pool of worker processes (the default for `cpu_heavy` oracles).
     A worker that dies (segfault, os._exit, out of memory) or runs past the timeout is
     killed and replaced; a chunk it held is re-run one design at a time, so only the
     design that crashed or hung gets NaN, with the reason;
   - "thread": a thread pool (timeouts are reported, but a thread cannot be stopped);
   - "inprocess": plain calls in this process (no timeout, no crash isolation);
   - any `concurrent.futures.Executor` (dask.distributed's `client.get_executor()`, Ray,
     ...): a failed or timed-out future gives NaN plus the reason for its designs;
   - "auto" (default): "process" for `oracle.cpu_heavy`, otherwise "inprocess";
4. retries designs that failed in the runtime (crash, timeout) up to `retries` times; a
   NaN the oracle itself returned is a verdict on the design and is not retried;
5. stores each new score in the cache as soon as its call returns (one short transaction
   per completed chunk, before the worker that returned it is given the next chunk), so a
   run killed mid-batch (even with SIGKILL) pays again only for the calls in flight;
6. records in the ledger the real calls (every design sent to the oracle, retries and
   re-runs included), the cache hits (cached designs and duplicates within the batch) and
   the failures (designs whose real call ended NaN); shows a progress bar for long batches.

Every result carries `provenance` (oracle name, version, params, real calls, cache hits) and
`from_cache` per design; the cache keeps name, version and params with every stored score.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vardbio.reward.cache import OracleCache
from vardbio.reward.evaluator import OracleEvaluator
from vardbio.reward.ledger import OracleLedger
from vardbio.reward.oracle import Oracle, OracleResult

EXECUTORS = ("auto", "process", "thread", "inprocess")


def score_chunk(oracle: Oracle, designs: list) -> tuple[list[float], list[str | None]]:
    """Run `oracle.score` on a chunk and check its answer; what an executor task runs."""
    result = oracle.score(designs)
    if len(result.values) != len(designs):
        raise RuntimeError(f"oracle {oracle.name} returned {len(result.values)} scores for "
                           f"{len(designs)} designs")
    return [float(v) for v in result.values], list(result.reasons)


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _limit_threads(n: int) -> None:
    """Cap the intra-op threads of numerical libraries in this (worker) process."""
    import sys

    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _worker_main(conn, threads: int | None = None) -> None:
    """Loop of one worker process: receive (oracle id, pickled oracle or None, designs)."""
    if threads is not None:
        _limit_threads(threads)
    oracles: dict[str, Oracle] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        oid, oracle_blob, designs_blob = msg
        try:
            if oracle_blob is not None:
                oracles[oid] = pickle.loads(oracle_blob)
            answer = ("ok", *score_chunk(oracles[oid], pickle.loads(designs_blob)))
        except Exception as err:  # noqa: BLE001 - sent back as the reason
            answer = ("error", f"{type(err).__name__}: {err}", traceback.format_exc(limit=5))
        conn.send(answer)


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process died ({name})"
    return f"worker process died (exit code {exitcode})"


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, ctx, threads: int | None):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, threads), daemon=True)
        self.proc.start()
        child.close()
        self.known: set[str] = set()
        self.task: list[int] | None = None
        self.deadline = float("inf")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()


class _ProcessPool:
    """Worker processes with per-task deadlines; a dead or hung worker is replaced."""

    def __init__(self, max_workers: int, start_method: str, threads: int | None):
        self.max_workers = max_workers
        self.threads = threads
        self.ctx = mp.get_context(start_method)
        self.workers: list[_Worker] = []

    def idle(self) -> _Worker | None:
        for w in self.workers:
            if w.task is None:
                return w
        if len(self.workers) < self.max_workers:
            w = _Worker(self.ctx, self.threads)
            self.workers.append(w)
            return w
        return None

    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.task is not None]

    def discard(self, worker: _Worker) -> None:
        worker.kill()
        self.workers.remove(worker)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []


@dataclass
class _Outcome:
    value: float
    reason: str | None
    cacheable: bool = True  # False for crashes, timeouts and exceptions


class OracleRuntime(OracleEvaluator):
    """Evaluates oracles through an executor, a persistent cache and a call budget.

    executor:     "auto" (default), "process", "thread", "inprocess", or a
                  concurrent.futures.Executor the caller owns (not shut down by close()).
    max_workers:  worker processes/threads (default: CPU count); for a passed executor, the
                  most chunks in flight at once, which timeouts are measured against.
    timeout:      seconds allowed per design (a chunk of k designs gets k * timeout); None
                  for no limit. Not available with "inprocess".
    retries:      extra attempts for a design whose call crashed or timed out (>= 0).
    cache:        an OracleCache, a path to the SQLite file, or None for no cache.
    ledger:       the OracleLedger to record calls in (a new one with `budget` if None).
    budget:       the most real calls allowed, when a new ledger is made here.
    chunk_size:   designs sent to a worker per task (larger amortises the transfer for
                  cheap oracles; a chunk that crashes is re-run one design at a time).
    progress:     show a tqdm bar when a batch has at least this many real calls
                  (None/False: never).
    cache_failures: also cache NaN scores the oracle itself returned (a deterministic
                  verdict such as an unparsable SMILES); crashes and timeouts never are.
    start_method: multiprocessing start method of the process pool ("spawn" default: safe
                  with threads and torch; "forkserver" or "fork" start faster).
    worker_threads: intra-op threads (OpenMP, MKL, OpenBLAS, torch) of each worker process
                  (default 1, so that N workers do not oversubscribe the cores); None leaves
                  the libraries' defaults.
    """

    def __init__(self, executor: str | cf.Executor = "auto", max_workers: int | None = None,
                 timeout: float | None = None, retries: int = 0,
                 cache: OracleCache | str | os.PathLike | None = None,
                 ledger: OracleLedger | None = None, budget: int | None = None,
                 chunk_size: int = 1, progress: int | None = 64, cache_failures: bool = True,
                 start_method: str = "spawn", worker_threads: int | None = 1):
        if ledger is not None and budget is not None:
            raise ValueError("give either a ledger or a budget, not both")
        super().__init__(ledger if ledger is not None else OracleLedger(budget=budget))
        if isinstance(executor, str):
            if executor not in EXECUTORS:
                raise ValueError(f"unknown executor '{executor}'; expected one of {EXECUTORS} "
                                 "or a concurrent.futures.Executor")
        elif not isinstance(executor, cf.Executor):
            raise ValueError(f"executor must be a name in {EXECUTORS} or a "
                             f"concurrent.futures.Executor, got {type(executor).__name__}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout}")
        if timeout is not None and executor == "inprocess":
            raise ValueError("a timeout cannot be enforced with executor='inprocess'; "
                             "use 'process' or 'thread'")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if start_method not in mp.get_all_start_methods():
            raise ValueError(f"start_method '{start_method}' is not available here; "
                             f"choose from {mp.get_all_start_methods()}")
        self.executor = executor
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout = timeout
        self.retries = int(retries)
        if cache is None or isinstance(cache, OracleCache):
            self.cache = cache
        else:
            self.cache = OracleCache(Path(cache))
        self.chunk_size = int(chunk_size)
        self.progress = progress if progress else None
        self.cache_failures = cache_failures
        self.start_method = start_method
        if worker_threads is not None and worker_threads < 1:
            raise ValueError(f"worker_threads must be >= 1 or None, got {worker_threads}")
        self.worker_threads = worker_threads
        self._pool: _ProcessPool | None = None
        self._threads: cf.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ public
    def evaluate(self, oracle: Oracle, designs: Sequence[Any]) -> OracleResult:
        """Scores of `designs`: cached where possible, NaN plus a reason where a design failed.

        Raises OracleBudgetExceeded, before any real call, if the uncached designs would go
        over the ledger's budget.
        """
        designs = list(designs)
        n = len(designs)
        identity = oracle.identity()
        provenance = oracle.provenance()
        values = np.full(n, np.nan)
        reasons: list[str | None] = [None] * n
        from_cache = np.zeros(n, dtype=bool)

        keys = [self._key(oracle, d) for d in designs]
        cached = {}
        if self.cache is not None:
            self.cache.register(identity, oracle.name, oracle.version, oracle.params())
            cached = self.cache.get_many(identity, [k for k in keys if k is not None])
        # One real call per distinct uncached key; the other designs with that key share it.
        todo: dict[str | int, list[int]] = {}
        for i, key in enumerate(keys):
            if key is not None and key in cached:
                values[i], reasons[i] = cached[key]
                from_cache[i] = True
            else:
                todo.setdefault(key if key is not None else -1 - i, []).append(i)
        first = [group[0] for group in todo.values()]
        hits = n - len(first)
        self.ledger.check(len(first))

        def store(done: list[tuple[int, _Outcome]]) -> None:
            # Called as each chunk completes, before its worker is given the next one.
            rows = [(keys[i], out.value, out.reason) for i, out in done
                    if keys[i] is not None and out.cacheable
                    and (self.cache_failures or not np.isnan(out.value))]
            self.cache.put_many(identity, rows)

        on_done = store if self.cache is not None else None
        outcomes, n_calls = self._run(oracle, designs, first, on_done) if first else ({}, 0)
        failures = 0
        for group in todo.values():
            out = outcomes[group[0]]
            failures += int(np.isnan(out.value))
            for i in group:
                values[i], reasons[i] = out.value, out.reason
        self.ledger.record(oracle.name, calls=n_calls, cache_hits=hits, failures=failures)
        provenance = dict(provenance, n_designs=n, real_calls=n_calls, cache_hits=hits)
        return OracleResult(values, reasons, provenance=provenance, from_cache=from_cache)

    def close(self) -> None:
        """Stop the worker processes/threads this runtime started (not a passed executor)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    def __enter__(self) -> "OracleRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _key(oracle: Oracle, design: Any) -> str | None:
        try:
            return oracle.design_key(design)
        except Exception:  # noqa: BLE001 - an unkeyable design is scored, never cached
            return None

    def _kind(self, oracle: Oracle) -> str | cf.Executor:
        if self.executor == "auto":
            return "process" if oracle.cpu_heavy else "inprocess"
        return self.executor

    def _bar(self, total: int):
        if self.progress is None or total < self.progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, desc="oracle", unit="design", leave=False)

    def _run(self, oracle: Oracle, designs: list, index: list[int],
             on_done: Callable[[list[tuple[int, "_Outcome"]]], None] | None = None,
             ) -> tuple[dict, int]:
        """Score designs[i] for i in index; returns ({i: _Outcome}, real calls made).

        on_done([(i, outcome), ...]) is called with each chunk's final outcomes as soon as
        they are known, before the executor is given more work (the cache writes them).
        """
        kind = self._kind(oracle)
        queue = deque(index[s:s + self.chunk_size] for s in range(0, len(index), self.chunk_size))
        state = _RunState(self, oracle, designs, queue, self._bar(len(index)), on_done)
        try:
            if kind == "inprocess":
                self._run_inprocess(state)
            elif kind == "process":
                self._run_pool(state)
            else:
                if kind == "thread":
                    if self._threads is None:
                        self._threads = cf.ThreadPoolExecutor(self.max_workers)
                    kind = self._threads
                self._run_executor(state, kind)
        except BaseException:
            # Interrupted (Ctrl-C, a cache that cannot be written): the calls already made
            # were paid for and their results may be cached, so the ledger counts them; a
            # worker still busy with this batch would answer the next one, so it goes.
            if self._pool is not None:
                for worker in self._pool.busy():
                    self._pool.discard(worker)
            if state.calls:
                self.ledger.record(oracle.name, calls=state.calls, failures=sum(
                    int(np.isnan(o.value)) for o in state.outcomes.values()))
            raise
        finally:
            if state.bar is not None:
                state.bar.close()
        return state.outcomes, state.calls

    def _run_inprocess(self, st: "_RunState") -> None:
        while st.queue:
            chunk = st.take()
            try:
                vals, whys = score_chunk(st.oracle, [st.designs[i] for i in chunk])
            except Exception as err:  # noqa: BLE001
                st.failed(chunk, f"{type(err).__name__}: {err}")
                continue
            st.done(chunk, vals, whys)

    def _run_executor(self, st: "_RunState", executor: cf.Executor) -> None:
        running: dict[cf.Future, tuple[list[int], float]] = {}
        try:
            self._drive_executor(st, executor, running)
        finally:
            for fut in running:  # left over only when interrupted
                fut.cancel()

    def _drive_executor(self, st: "_RunState", executor: cf.Executor,
                        running: dict[cf.Future, tuple[list[int], float]]) -> None:
        while st.queue or running:
            while st.queue and len(running) < self.max_workers:
                chunk = st.take()
                chunk_designs = [st.designs[i] for i in chunk]
                try:
                    fut = executor.submit(score_chunk, st.oracle, chunk_designs)
                except Exception as err:  # noqa: BLE001 - a broken executor fails the chunk
                    st.failed(chunk, f"executor refused the task: {type(err).__name__}: {err}")
                    continue
                deadline = time.monotonic() + self.timeout * len(chunk) if self.timeout else np.inf
                running[fut] = (chunk, deadline)
            if not running:
                continue
            wait_s = min(d for _, d in running.values()) - time.monotonic()
            done, _ = cf.wait(list(running), timeout=None if wait_s == np.inf else max(wait_s, 0),
                              return_when=cf.FIRST_COMPLETED)
            for fut in done:
                chunk, _ = running.pop(fut)
                try:
                    vals, whys = fut.result()
                except Exception as err:  # noqa: BLE001 - a task error or a lost worker
                    st.failed(chunk, f"{type(err).__name__}: {err}", runtime=True)
                    continue
                st.done(chunk, vals, whys)
            now = time.monotonic()
            for fut, (chunk, deadline) in list(running.items()):
                if now >= deadline:
                    fut.cancel()
                    del running[fut]
                    st.failed(chunk, f"timed out after {self.timeout * len(chunk):g} s",
                              runtime=True)

    def _run_pool(self, st: "_RunState") -> None:
        if self._pool is None:
            self._pool = _ProcessPool(self.max_workers, self.start_method, self.worker_threads)
        pool = self._pool
        oid = st.oracle.identity()
        try:
            oracle_blob = pickle.dumps(st.oracle)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"oracle {st.oracle.name} cannot be pickled for the process "
                             f"executor ({err}); define it at module level or use "
                             "executor='thread'") from err
        while st.queue or pool.busy():
            while st.queue:
                worker = pool.idle()
                if worker is None:
                    break
                chunk = st.take()
                try:
                    blob = pickle.dumps([st.designs[i] for i in chunk])
                except Exception as err:  # noqa: BLE001 - an unpicklable design
                    st.failed(chunk, f"design cannot be sent to a worker: {err}")
                    continue
                try:
                    worker.conn.send((oid, None if oid in worker.known else oracle_blob, blob))
                except (OSError, BrokenPipeError):
                    pool.discard(worker)
                    st.queue.appendleft(chunk)
                    st.calls -= len(chunk)
                    continue
                worker.known.add(oid)
                worker.task = chunk
                worker.deadline = (time.monotonic() + self.timeout * len(chunk)
                                   if self.timeout else float("inf"))
            busy = pool.busy()
            if not busy:
                continue
            wait_s = min(w.deadline for w in busy) - time.monotonic()
            handles = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = set(mp_wait(handles, timeout=None if wait_s == float("inf")
                                else max(wait_s, 0.0)))
            now = time.monotonic()
            for w in busy:
                chunk = w.task
                if w.conn in ready or w.proc.sentinel in ready:
                    answer = None
                    try:
                        if w.conn.poll():
                            answer = w.conn.recv()
                    except (EOFError, OSError):
                        answer = None
                    if answer is None:
                        w.proc.join(5)
                        reason = _death_reason(w.proc.exitcode)
                        pool.discard(w)
                        st.failed(chunk, reason, runtime=True)
                    elif answer[0] == "ok":
                        w.task = None
                        st.done(chunk, answer[1], answer[2])
                    else:
                        w.task = None
                        st.failed(chunk, answer[1])
                elif now >= w.deadline:
                    pool.discard(w)
                    st.failed(chunk, f"timed out after {self.timeout * len(chunk):g} s",
                              runtime=True)


class _RunState:
    """Book-keeping of one batch: the queue of chunks, attempts, outcomes, calls made."""

    def __init__(self, rt: OracleRuntime, oracle: Oracle, designs: list, queue: deque, bar,
                 on_done: Callable[[list[tuple[int, _Outcome]]], None] | None = None):
        self.rt, self.oracle, self.designs, self.queue, self.bar = rt, oracle, designs, queue, bar
        self.on_done = on_done
        self.outcomes: dict[int, _Outcome] = {}
        self.attempts: dict[int, int] = {}
        self.calls = 0

    def take(self) -> list[int]:
        chunk = self.queue.popleft()
        self.calls += len(chunk)
        return chunk

    def done(self, chunk: list[int], values: list[float], reasons: list[str | None]) -> None:
        for i, v, why in zip(chunk, values, reasons):
            v = float(v)
            if np.isnan(v) and not why:
                why = "oracle returned NaN without a reason"
            self.outcomes[i] = _Outcome(v, why if np.isnan(v) else None)
        if self.on_done is not None:
            self.on_done([(i, self.outcomes[i]) for i in chunk])
        if self.bar is not None:
            self.bar.update(len(chunk))

    def failed(self, chunk: list[int], reason: str, runtime: bool = False) -> None:
        """A chunk that failed as a whole: isolate its designs, then retry or give NaN.

        runtime: the call crashed or timed out (retried up to `retries`); otherwise the
        oracle raised, which is final. Neither kind is cached.
        """
        remaining = self.rt.ledger.remaining
        if remaining is not None:
            remaining -= self.calls
        if len(chunk) > 1:
            # Which design broke the chunk is unknown: re-run them one by one (new calls).
            if remaining is None or remaining >= len(chunk):
                for i in reversed(chunk):
                    self.queue.appendleft([i])
                return
            reason += "; not re-run one by one: oracle budget exhausted"
        for i in chunk:
            self.attempts[i] = self.attempts.get(i, 0) + 1
            why = reason
            if runtime and len(chunk) == 1 and self.attempts[i] <= self.rt.retries:
                if remaining is None or remaining >= 1:
                    self.queue.append([i])
                    return
                why += "; no retry: oracle budget exhausted"
            if self.attempts[i] > 1:
                why += f" ({self.attempts[i]} attempts)"
            self.outcomes[i] = _Outcome(np.nan, why, cacheable=False)
            if self.bar is not None:
                self.bar.update(1)
