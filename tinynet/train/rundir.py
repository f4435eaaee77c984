"""The run folder: what it holds, who may use it, and how its checkpoints rotate.

    config.json      settings of the run (trainer, model, optimizer), restarts
    metrics.csv      one row per evaluation
    checkpoint.npz   the latest state (every evaluation and the final stop)
    last_good.npz    the latest state whose evaluation passed the divergence
                     checks (a hard link to checkpoint.npz while they agree)
    result.json      how the run (or its latest part) ended
    attempt-K/       a diverged attempt, kept when the run is restarted from
                     last_good.npz (its config, metrics, result, checkpoint)
    .lock            held (flock) by the process using the folder

Every file is written by tinynet.train.files (atomic replace or fsynced append).
`--overwrite` removes only the names above; anything else in the folder stays.
"""
import fcntl
import json
import math
import os
import shutil
import socket
import sys
import time

from tinynet.train.files import (RunFileError, atomic_json, atomic_link_or_copy, atomic_write,
                                 read_json, read_metrics, remove_stray_temporaries)

CONFIG, METRICS, CHECKPOINT, RESULT = "config.json", "metrics.csv", "checkpoint.npz", "result.json"
LAST_GOOD, LOCK = "last_good.npz", ".lock"
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, LAST_GOOD, RESULT)
ATTEMPT = "attempt-"


class RunExistsError(Exception):
    """The run directory already holds a run (pass resume or overwrite)."""


class RunLockedError(Exception):
    """Another live process is using the run directory."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """One run folder. `open(...)` checks and locks it; `close()` releases the lock."""

    def __init__(self, path):
        self.path = path
        self._lock_fd = None
        self.notes = []            # things worth telling the user (a stale lock taken over, ...)

    def file(self, name):
        return os.path.join(self.path, name)

    # -- opening and locking ----------------------------------------------------------------
    def open(self, resume, overwrite, from_last_good=False):
        """Create or check the folder and lock it. Returns "new", "resume" or
        "restart" (resume from last_good.npz). Raises RunExistsError,
        RunLockedError or RunFileError with a one-line message."""
        p = self.path
        if os.path.exists(p) and not os.path.isdir(p):
            raise RunFileError(f"run directory {p} exists and is not a folder: choose another --out")
        try:
            os.makedirs(p, exist_ok=True)
        except OSError as e:
            raise RunFileError(f"cannot create run directory {p}: {e.strerror}; choose another --out") from None
        self._lock()
        try:
            removed = remove_stray_temporaries(p)
            if removed:
                self.notes.append(f"removed {len(removed)} temporary file(s) left by an interrupted write")
            return self._check_state(resume, overwrite, from_last_good)
        except BaseException:
            self.close()
            raise

    def _lock(self):
        path = self.file(LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFileError(f"run directory {self.path} is not writable ({e.strerror}); "
                               f"choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            who = (f"process {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"
                   if holder else "another process")
            raise RunLockedError(f"run directory {self.path} is in use by {who}: wait for it to end, "
                                 f"stop it (kill -TERM {holder.get('pid', 'PID')}), or choose another --out") \
                from None
        old = self._holder(fd)
        if old and old.get("pid") and old.get("host") == socket.gethostname() and not _pid_alive(old["pid"]):
            self.notes.append(f"a stale lock of process {old['pid']} (no longer running) was taken over")
        stamp = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                started=time.strftime("%Y-%m-%dT%H:%M:%S"), argv=sys.argv[:8])).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp, 0)
        self._lock_fd = fd

    @staticmethod
    def _holder(fd):
        try:
            raw = os.pread(fd, 4096, 0)
            return json.loads(raw) if raw.strip() else {}
        except (OSError, ValueError):
            return {}

    def close(self):
        """Release the lock (the .lock file stays, emptied: an empty lock file is a clean one)."""
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            except OSError:
                pass
            os.close(self._lock_fd)          # closing the descriptor releases the flock
            self._lock_fd = None

    def _check_state(self, resume, overwrite, from_last_good):
        existing = [f for f in RUN_FILES if os.path.exists(self.file(f))]
        if resume:
            return self._check_resumable(from_last_good)
        if existing:
            if not overwrite:
                raise RunExistsError(f"run directory {self.path} already holds a run ({', '.join(existing)}); "
                                     f"pass resume=True to continue it or overwrite=True to replace it")
            for f in existing:
                os.remove(self.file(f))
            for name in os.listdir(self.path):
                if name.startswith(ATTEMPT) and os.path.isdir(self.file(name)):
                    shutil.rmtree(self.file(name))
        return "new"

    def _check_resumable(self, from_last_good):
        ckpt = self.file(LAST_GOOD if from_last_good else CHECKPOINT)
        if not os.path.exists(self.file(CONFIG)):
            raise RunFileError(f"cannot resume: {self.path} holds no run ({CONFIG} is missing); "
                               f"start the run without --resume")
        if not os.path.exists(ckpt):
            if not from_last_good and not self.metrics_rows(math.inf):
                # stopped before its first checkpoint: nothing was trained, start it afresh
                for f in (CONFIG, METRICS, RESULT):
                    if os.path.exists(self.file(f)):
                        os.remove(self.file(f))
                self.notes.append("the run had stopped before its first checkpoint: started afresh")
                return "new"
            raise RunFileError(f"cannot resume: {ckpt} does not exist; start the run again with --overwrite")
        if not from_last_good and os.path.exists(self.file(RESULT)):
            res = read_json(self.file(RESULT), "result file")
            if res.get("stop_reason") == "diverged":
                raise RunFileError(
                    f"cannot resume {self.path}: the run diverged at step {res.get('step')} "
                    f"({res.get('divergence', {}).get('seen', 'see result.json')}); its last good state is "
                    f"{self.file(LAST_GOOD)} (step {res.get('last_good_step')}): restart from it with "
                    f"--resume --from-last-good and changed optimizer settings (e.g. a smaller --lr)")
        return "restart" if from_last_good else "resume"

    # -- files ----------------------------------------------------------------------------------
    def read_config(self):
        return read_json(self.file(CONFIG), "run configuration")

    def write_config(self, conf):
        atomic_json(self.file(CONFIG), conf)

    def write_result(self, result):
        atomic_json(self.file(RESULT), result)

    def save(self, write_checkpoint, good):
        """write_checkpoint(path) writes the latest state to checkpoint.npz; when
        `good`, last_good.npz becomes that same state."""
        write_checkpoint(self.file(CHECKPOINT))
        if good:
            atomic_link_or_copy(self.file(CHECKPOINT), self.file(LAST_GOOD))

    def metrics_rows(self, upto_step):
        path = self.file(METRICS)
        if not os.path.exists(path):
            return []
        return [r for r in read_metrics(path) if r["step"] <= upto_step]

    def archive_attempt(self):
        """Before a restart from last_good.npz: copy the attempt's config, metrics
        and result into attempt-K/ and move its latest checkpoint there, then make
        checkpoint.npz the last good state. Returns the folder's name."""
        k = 1
        while os.path.exists(self.file(f"{ATTEMPT}{k}")):
            k += 1
        name = f"{ATTEMPT}{k}"
        dest = self.file(name)
        tmp = dest + ".partial"
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        try:
            os.makedirs(tmp)
            for f in (CONFIG, METRICS, RESULT):
                if os.path.exists(self.file(f)):
                    with open(self.file(f), "rb") as src:
                        data = src.read()
                    atomic_write(os.path.join(tmp, f), lambda fh, d=data: fh.write(d))
            if os.path.exists(self.file(CHECKPOINT)):
                atomic_link_or_copy(self.file(CHECKPOINT), os.path.join(tmp, CHECKPOINT))
            os.replace(tmp, dest)
            atomic_link_or_copy(self.file(LAST_GOOD), self.file(CHECKPOINT))
        except OSError as e:
            raise RunFileError(f"could not keep the diverged attempt in {dest}: {e.strerror}; "
                               f"nothing was changed") from None
        return name
