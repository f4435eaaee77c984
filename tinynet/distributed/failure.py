"""One rank's failure ends every rank.

A rank that raises while the others wait in a collective would leave them
waiting forever. `ending_every_rank_on_failure(comm)` prints the rank's
traceback and one line saying which rank failed and why, then calls
MPI_Abort, which mpirun turns into the end of every rank (exit status
nonzero). A rank killed outright (SIGKILL, the OOM killer) is mpirun's to
notice: it ends the others and names the rank and signal.

An error that every rank raises at the same point (a bad setting found before
the first collective, or rank 0's run-folder error, which it sends to the
others before raising: tinynet.train) is marked with `raised_on_every_rank`
and passes through, so the CLI reports it as in one process.
"""
import contextlib
import sys
import traceback


@contextlib.contextmanager
def ending_every_rank_on_failure(comm, who="tinynet"):
    try:
        yield
    except SystemExit:
        raise
    except BaseException as e:                 # noqa: BLE001 - reported, then every rank ends
        if comm.size == 1 or getattr(e, "raised_on_every_rank", False):
            raise
        traceback.print_exc()
        print(f"{who}: rank {comm.rank} of {comm.size} failed ({type(e).__name__}: {e}); ending every rank",
              file=sys.stderr, flush=True)
        comm.abort(1)


def on_every_rank(e):
    """Mark e as raised at the same point by every rank; returns e."""
    try:
        e.raised_on_every_rank = True
    except AttributeError:
        pass
    return e
