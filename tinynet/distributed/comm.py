"""Communicators: the one place where tinynet talks across processes.

Data-parallel training splits every global minibatch of B rows into P equal
shards, one per rank (rank r takes rows r B/P .. (r+1) B/P - 1 of the batch a
single process would draw). Every quantity the optimizers need that is a sum
or mean over the batch's examples (the gradient, KFAC's factor sums, ACP's
input moments, UBP's per-layer updates) is a sum of per-rank partial sums,
so an all-reduce of those partial sums gives each rank the numbers one
process would compute from the whole batch, up to the order of floating-point
additions.

`LocalComm` (one process) makes every collective the identity, so the
optimizers call the communicator unconditionally. `MPIComm` runs over mpi4py
and the system's MPI (OpenMPI), with the buffer interface only (Allreduce /
Bcast on contiguous numpy arrays, upper-case methods); Python objects are
pickled once, at the start of a run (the state rank 0 read from the run
folder), never per step.

Bucketing: `allreduce_sum(arrays)` packs small arrays of one dtype into
buckets of at most `bucket_bytes` and reduces each bucket with one
Allreduce; an array larger than a bucket is reduced in place, in contiguous
chunks of `bucket_bytes` (no copy). Symmetric matrices travel as their upper
triangles (`pack_upper` / `unpack_upper`): d(d+1)/2 numbers instead of d^2.

Every collective is counted in `account` (tinynet.distributed.account): the
payload bytes each rank contributes, by tag ("gradient", "factors",
"inverses", ...). A ring all-reduce puts about 2 (P-1)/P times that on each
rank's link.
"""
import os
import sys

import numpy as np

from tinynet.distributed.account import CommAccount

BUCKET_BYTES = 16 * 2**20


class RankFailed(RuntimeError):
    """Another rank failed first and reported why (rank 0 opening the run folder)."""


class LocalComm:
    """One process: rank 0 of 1, every collective the identity."""
    rank, size = 0, 1
    kind = "local"

    def __init__(self):
        self.account = CommAccount()

    def allreduce_sum(self, arrays, tag):
        return arrays

    def allreduce_max(self, values, tag="control"):
        return np.asarray(values, dtype=np.float64)

    def mean_gradient(self, bk, g, loss, tag="gradient"):
        return float(loss)

    def bcast(self, array, root, tag):
        return array

    def bcast_object(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, code=1):
        sys.exit(code)

    def __repr__(self):
        return "LocalComm()"


LOCAL = LocalComm()


class MPIComm:
    """P processes started by mpirun / srun, over mpi4py's COMM_WORLD (or the
    communicator given)."""
    kind = "mpi"

    def __init__(self, comm=None, bucket_bytes=BUCKET_BYTES):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise RuntimeError("--distributed mpi needs mpi4py and an MPI library: install OpenMPI "
                               "(apt-get install openmpi-bin libopenmpi-dev) and then "
                               "pip install -e \".[mpi]\"" f" ({e})") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if not bucket_bytes >= 1024:
            raise ValueError(f"bucket_bytes must be at least 1024, got {bucket_bytes}")
        self.bucket_bytes = int(bucket_bytes)
        self.account = CommAccount()
        self.bk = None                 # the network's backend, set by attach(): device arrays go via the host

    def __repr__(self):
        return f"MPIComm(rank {self.rank} of {self.size})"

    # -- collectives -----------------------------------------------------------------------------
    def allreduce_sum(self, arrays, tag):
        """Sum each array over the ranks, in place; returns the list. Arrays are
        host numpy arrays, or backend arrays (copied through the host)."""
        arrays = list(arrays)
        hosts = [self._host(a) for a in arrays]
        by_dtype = {}
        for j, h in enumerate(hosts):
            by_dtype.setdefault(h.dtype, []).append(j)
        for dt, idx in by_dtype.items():
            isz = np.dtype(dt).itemsize
            chunk = max(1, self.bucket_bytes // isz)
            bucket, used = [], 0
            for j in idx:
                h = hosts[j]
                if h.size > chunk or h.size * isz > self.bucket_bytes // 2:
                    self._reduce_inplace(h.reshape(-1), chunk, tag)       # big: in place, by chunks
                    continue
                if used + h.size > chunk:
                    self._reduce_bucket(bucket, dt, tag)
                    bucket, used = [], 0
                bucket.append(h)
                used += h.size
            if bucket:
                self._reduce_bucket(bucket, dt, tag)
        for a, h in zip(arrays, hosts):
            if h is not a:
                self.bk.copy_into(a, self.bk.asarray(h, h.dtype))
        return arrays

    def allreduce_max(self, values, tag="control"):
        """Element-wise maximum over the ranks of a few numbers (float64)."""
        buf = np.array(values, dtype=np.float64).reshape(-1)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        self.account.add(tag, buf.nbytes)
        return buf

    def mean_gradient(self, bk, g, loss, tag="gradient"):
        """The mean over ranks of a gradient vector `g` (in place; each rank's
        the mean over its shard) and of the shard's mean loss, returned: the
        global batch's mean gradient and loss (equal shards)."""
        box = np.array([loss], dtype=np.float64)
        self.allreduce_sum([g, box], tag)
        bk.scale(1.0 / self.size, g)
        return float(box[0]) / self.size

    def bcast(self, array, root, tag):
        """Broadcast `array` (host numpy, contiguous) from `root` in place."""
        h = self._host(array)
        flat = h.reshape(-1)
        chunk = max(1, self.bucket_bytes // h.dtype.itemsize)
        for s in range(0, flat.size, chunk):
            self.comm.Bcast(flat[s:s + chunk], root=root)
        if self.rank == root:
            self.account.add(tag, h.nbytes)
        if h is not array:
            self.bk.copy_into(array, self.bk.asarray(h, h.dtype))
        return array

    def bcast_object(self, obj, root=0):
        """Pickled broadcast: only for the state at the start of a run."""
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        """End every rank (MPI_Abort): a rank that fails must not leave the
        others waiting in a collective."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    # -- pieces ----------------------------------------------------------------------------------
    def _host(self, a):
        if isinstance(a, np.ndarray):
            if not a.flags.c_contiguous:
                raise ValueError(f"MPIComm: arrays must be contiguous, got strides {a.strides}")
            return a
        if self.bk is None:
            raise TypeError(f"MPIComm: {type(a).__name__} is not a numpy array and no backend is attached")
        return np.ascontiguousarray(self.bk.to_host(a))

    def _reduce_inplace(self, flat, chunk, tag):
        for s in range(0, flat.size, chunk):
            self.comm.Allreduce(self.MPI.IN_PLACE, flat[s:s + chunk], op=self.MPI.SUM)
        self.account.add(tag, flat.nbytes)

    def _reduce_bucket(self, bucket, dt, tag):
        if len(bucket) == 1:
            self._reduce_inplace(bucket[0].reshape(-1), bucket[0].size, tag)
            return
        buf = np.concatenate([h.reshape(-1) for h in bucket])           # one dtype per bucket
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.account.add(tag, buf.nbytes)
        pos = 0
        for h in bucket:
            h.reshape(-1)[:] = buf[pos:pos + h.size]
            pos += h.size


def pack_upper(M, dtype=None):
    """The upper triangle of a square host matrix, row by row: d(d+1)/2 numbers
    (in `dtype`, default M's)."""
    from tinynet.kernels.stats import pack_upper as kernel
    d = M.shape[0]
    out = np.empty(d * (d + 1) // 2, dtype=M.dtype if dtype is None else dtype)
    kernel(np.ascontiguousarray(M), out)
    return out


def unpack_upper(v, d, out=None):
    """The symmetric d x d matrix whose upper triangle is v (pack_upper's order)."""
    from tinynet.kernels.stats import unpack_upper as kernel
    out = np.empty((d, d), dtype=v.dtype) if out is None else out
    kernel(v, out)
    return out


def get_comm(kind):
    """"none" / None: LOCAL; "mpi": an MPIComm over COMM_WORLD."""
    if kind in (None, "none", "local"):
        return LOCAL
    if kind == "mpi":
        return MPIComm(bucket_bytes=int(os.environ.get("TINYNET_MPI_BUCKET_BYTES", BUCKET_BYTES)))
    raise ValueError(f"unknown distributed mode {kind!r}: use 'none' or 'mpi'")
