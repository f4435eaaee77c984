"""How a run's files are written and read, so that no crash or full disk can
leave one half-written.

- Whole files (config.json, result.json, checkpoints, a rewritten metrics.csv)
  go through `atomic_write`: a temporary file `.NAME.tmp-PID` in the same
  folder, flushed and fsynced, renamed over NAME (os.replace is atomic on
  POSIX), then the folder fsynced so the rename itself survives a power cut.
  A failure leaves NAME as it was and removes the temporary file.
- metrics.csv grows by appending one row, flushed and fsynced: a crash can only
  cut the last row, and `read_metrics` drops a cut last row.
- A failed write raises RunFileError (an OSError's one-line account: which
  file, why, and what survives), never a traceback from deep inside numpy.
"""
import csv
import errno
import io
import json
import os

import numpy as np

TMP_MARK = ".tmp-"      # temporary files: .NAME.tmp-PID (stray ones are removed when a run opens)


class RunFileError(OSError):
    """A run file could not be written or read; the message is one line (an
    OSError, so callers that handle file errors handle it too)."""


class CheckpointError(RunFileError):
    """A checkpoint file is missing, truncated or not a tinynet checkpoint."""


def _why(e):
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (or the file size limit was reached)"
    return e.strerror or str(e) if isinstance(e, OSError) else str(e)


def fsync_dir(folder):
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                     # some file systems cannot fsync a folder
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Create or replace `path` with what `write(binary_file)` writes, atomically."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, "." + os.path.basename(path) + TMP_MARK + str(os.getpid()))
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise RunFileError(f"could not write {path}: {_why(e)}; the previous version of the file, "
                           f"if any, is unchanged") from e
    fsync_dir(folder)


def atomic_json(path, obj):
    text = json.dumps(obj, indent=2, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def atomic_link_or_copy(src, dst):
    """dst becomes a (hard-linked where possible) copy of src, atomically: the
    last-good checkpoint shares the latest one's file until that is replaced."""
    folder = os.path.dirname(dst) or "."
    tmp = os.path.join(folder, "." + os.path.basename(dst) + TMP_MARK + str(os.getpid()))
    _remove_quietly(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            with open(src, "rb") as s:
                data = s.read()
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        _remove_quietly(tmp)
        raise RunFileError(f"could not write {dst}: {_why(e)}; the previous version is unchanged") from e
    fsync_dir(folder)


def read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunFileError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise RunFileError(f"{what} {path} is damaged ({_why(e)}): it is not valid JSON") from None


def remove_stray_temporaries(folder):
    """Remove temporary files a killed process left behind (.NAME.tmp-PID)."""
    removed = []
    for name in os.listdir(folder):
        if name.startswith(".") and TMP_MARK in name:
            _remove_quietly(os.path.join(folder, name))
            removed.append(name)
    return removed


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


# -- checkpoints ------------------------------------------------------------------------------
def _flatten(obj, prefix, arrays):
    """A JSON skeleton of obj with each array replaced by {"__array__": key}."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {str(k): _flatten(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {prefix!r} "
                    f"(state_dict values must be arrays, numbers, strings, lists or dicts)")


def _unflatten(skel, arrays):
    if isinstance(skel, dict):
        if set(skel) == {"__array__"}:
            return arrays[skel["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in skel.items()}
    if isinstance(skel, list):
        return [_unflatten(v, arrays) for v in skel]
    return skel


def save_checkpoint(path, theta, optimizer_state, trainer_state):
    """Write parameters, optimizer state_dict and trainer state to `path`,
    atomically (an .npz of plain arrays and a JSON skeleton: no pickle)."""
    arrays = {"theta": np.asarray(theta)}
    skel = {"optimizer": _flatten(optimizer_state, "optimizer", arrays),
            "trainer": _flatten(trainer_state, "trainer", arrays)}
    arrays["skeleton"] = np.array(json.dumps(skel))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """(theta, optimizer_state, trainer_state) from a checkpoint file; a missing,
    truncated or foreign file raises CheckpointError (one line)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:     # zipfile.BadZipFile, ValueError (pickled object), EOFError, OSError
        raise CheckpointError(f"checkpoint {path} is damaged or not a tinynet checkpoint "
                              f"({type(e).__name__}: {e})") from None
    try:
        skel = json.loads(str(arrays.pop("skeleton")))
        theta = arrays["theta"]
        out = theta, _unflatten(skel["optimizer"], arrays), _unflatten(skel["trainer"], arrays)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing or unreadable entry {e}") from None
    if theta.ndim != 1 or not np.issubdtype(theta.dtype, np.floating):
        raise CheckpointError(f"checkpoint {path} is damaged: its parameters are not a float vector")
    return out


# -- metrics.csv ------------------------------------------------------------------------------
BASE_COLUMNS = ["step", "epoch", "seconds", "train_loss", "test_loss", "test_error", "batch_loss"]


def read_metrics(path):
    """Rows of a metrics.csv as dicts of floats (None for empty cells). A last
    row cut short by a crash is dropped; any other malformed content raises
    RunFileError naming the file and the line."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise RunFileError(f"metrics file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(f"metrics file {path} cannot be read: {_why(e)}") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]               # an append cut short: only the last row can be
    reader = csv.reader(io.StringIO("".join(lines)))
    try:
        header = next(reader)
    except StopIteration:
        raise RunFileError(f"metrics file {path} is empty: it is not a tinynet metrics file") from None
    if "step" not in header:
        raise RunFileError(f"metrics file {path} has no 'step' column: it is not a tinynet metrics file")
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if len(cells) != len(header):
            raise RunFileError(f"metrics file {path}, line {lineno}: {len(cells)} cells for "
                               f"{len(header)} columns")
        try:
            row = {k: (float(v) if v != "" else None) for k, v in zip(header, cells)}
            row["step"] = int(row["step"])
        except (TypeError, ValueError) as e:
            raise RunFileError(f"metrics file {path}, line {lineno}: {e}") from None
        rows.append(row)
    return rows


def _cell(v):
    return "" if v is None else repr(float(v)) if isinstance(v, (float, np.floating)) else v


class MetricsWriter:
    """metrics.csv, one row per evaluation, appended and fsynced; when the
    optimizer reports a new metric the header grows and the (small) file is
    rewritten atomically."""

    def __init__(self, path, rows):
        self.path, self.rows = path, list(rows)
        self.columns = list(BASE_COLUMNS)
        for r in self.rows:
            self._grow(r)
        if path is not None:
            self._rewrite()

    def _grow(self, row):
        new = [k for k in row if k not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self):
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _cell(r.get(k)) for k in self.columns})
        data = buf.getvalue().encode()
        atomic_write(self.path, lambda f: f.write(data))

    def add(self, row):
        self.rows.append(row)
        if self.path is None:
            self._grow(row)
            return
        if self._grow(row):
            self._rewrite()
            return
        buf = io.StringIO()
        csv.DictWriter(buf, self.columns, lineterminator="\n").writerow(
            {k: _cell(row.get(k)) for k in self.columns})
        try:
            with open(self.path, "a", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.rows.pop()
            raise RunFileError(f"could not append to {self.path}: {_why(e)}; its earlier rows are "
                               f"intact (a cut last row is ignored when read)") from e
