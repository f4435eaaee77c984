"""Trials in worker processes: `jobs` processes started by spawn (a fresh
interpreter: no state or threads inherited from the caller), each with one
BLAS / Numba thread so that J workers on J cores do not oversubscribe them.

Workers ignore SIGINT: Ctrl-C reaches the search driver, which stops handing
out trials, ends the workers and leaves the results file with every trial that
finished (a resumed search reruns the ones in flight). A worker whose driver
has gone (SIGTERM or SIGKILL to the driver: it ends at once) ends itself
within a second instead of computing trials nobody will read. When a worker dies (a crash in native
code, the OOM killer), the pool is started again and each trial that was in
flight runs once more on its own: the one that kills its worker alone is
recorded as failed, and the search goes on.
"""
import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def _init_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a worker whose driver is gone (SIGTERM or SIGKILL to the driver alone) ends
    # itself: otherwise it would go on computing a trial nobody will read
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="tinynet-tune-parent-watch", daemon=True).start()


def _run(objective, params):
    from tinynet.tune.search import run_objective
    return run_objective(objective, params)


class _OneThreadEnv:
    """The thread-count variables set to 1 while workers are spawned (they read
    them at import time); the caller's environment is restored afterwards."""

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in THREAD_VARS}
        for k in THREAD_VARS:
            os.environ[k] = "1"

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False


def _pool(jobs):
    with _OneThreadEnv():
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                      initializer=_init_worker)
        # start every worker now, under the one-thread environment
        list(pool.map(abs, range(jobs)))
    return pool


def run_parallel(objective, proposer, trials, jobs, done, rfile, record):
    """Run the trials not in `done`, `jobs` at a time; results are written and
    recorded in index order. When a worker dies, every trial in flight is run
    again alone in a fresh pool: the one that kills its worker alone is failed,
    the others (innocent neighbours) get their real result."""
    from tinynet.tune.search import Trial
    try:
        pickle.dumps(objective)
    except Exception as e:   # noqa: BLE001
        raise TypeError(f"with jobs > 1 the objective must be picklable (a module-level function or "
                        f"class instance): {e}") from None
    pending = {}             # future -> (index, params, draws)
    finished = dict(done)    # results waiting for the lower indexes before they are written
    suspects = []            # trials in flight when a worker died, rerun one at a time
    solo = False             # the trial in flight is a suspect run alone
    written = len(done)
    nxt = len(done)
    pool = _pool(jobs)
    try:
        while nxt < trials or pending or suspects:
            if suspects and not pending:
                i, params, draws = suspects.pop(0)
                pending[pool.submit(_run, objective, params)] = (i, params, draws)
                solo = True
            while not suspects and len(pending) < jobs and nxt < trials and proposer.ready(nxt, finished):
                params, draws = proposer.propose(nxt, finished)
                pending[pool.submit(_run, objective, params)] = (nxt, params, draws)
                nxt += 1
                solo = False
            ready, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in ready:
                i, params, draws = pending.pop(fut)
                try:
                    out, secs = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if not solo:
                        suspects.append((i, params, draws))
                        continue
                    finished[i] = Trial(i, params, float("nan"), "failed", 0.0, draws,
                                        error="the trial killed its worker process (a crash in native code, "
                                              "the out-of-memory killer or a signal)")
                    continue
                finished[i] = Trial(i, params, float(out.cost), out.status, secs, draws, dict(out.info),
                                    out.error)
            while written in finished:
                t = finished[written]
                if rfile:
                    rfile.append(t)
                record(t)
                written += 1
            if broken:
                for fut, item in pending.items():     # the rest of the pool's trials die with it
                    suspects.append(item)
                pending.clear()
                suspects.sort()
                _stop(pool)
                pool = _pool(jobs)
    except BaseException:
        _stop(pool)            # Ctrl-C or an error: the trials in flight are not waited for
        raise
    pool.shutdown(wait=True)


def _stop(pool):
    # the executor has no public way to end a running task: terminate its processes
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
