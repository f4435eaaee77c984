"""Dense linear algebra kernels: matmul in the four transpose combinations,
the accumulating matmul (out += alpha op(A) op(B)), row-broadcast bias add, the ones-column augmentation [H 1], column sums
(alone, and with the axpy of a bias's SGD step), and vector updates.

Index legend: A is (m, k) after its optional transpose, B is (k, n), out is (m, n).

CPU kernels are `@njit` functions. The CPU backend's products go to numpy's
own OpenBLAS through tinynet.kernels.blas where numpy's wheel carries it
(faster than the OpenBLAS inside scipy, which Numba's `np.dot` calls, and one
thread pool for the step); the matmul kernels here and matmul_acc_cpu are the
fallback elsewhere, and the reference tests/test_blas.py compares it with.
Transposed operands are passed as transposed views, which BLAS reads without
a copy.
"""
import numpy as np
from numba import njit

# ---------------------------------------------------------------- CPU (@njit)


@njit(cache=True)
def matmul_nn_cpu(A, B, out):
    """out = A @ B."""
    np.dot(A, B, out)


@njit(cache=True)
def matmul_nt_cpu(A, B, out):
    """out = A @ B.T  (B stored as (n, k))."""
    np.dot(A, B.T, out)


@njit(cache=True)
def matmul_tn_cpu(A, B, out):
    """out = A.T @ B  (A stored as (k, m))."""
    np.dot(A.T, B, out)


@njit(cache=True)
def matmul_tt_cpu(A, B, out):
    """out = A.T @ B.T."""
    np.dot(A.T, B.T, out)


def matmul_acc_cpu(A, B, out, alpha, ta, tb):
    """out += alpha op(A) @ op(B) in place: BLAS gemm with beta = 1, which
    saves writing the product and reading it back for an axpy. Numba's np.dot
    has no accumulating form, so this one CPU kernel is plain Python calling
    scipy.linalg.blas, which wraps the same OpenBLAS as Numba's np.dot (one
    BLAS thread pool). A, B, out C-contiguous, one dtype. In the column-major
    view of Fortran a C-ordered array is its transpose, so the call computes
    out^T += alpha op(B)^T op(A)^T."""
    from scipy.linalg import blas
    gemm = blas.sgemm if out.dtype == np.float32 else blas.dgemm
    r = gemm(alpha, B.T, A.T, beta=1.0, c=out.T, trans_a=int(tb), trans_b=int(ta), overwrite_c=1)
    if not np.shares_memory(r, out):      # f2py copied c (it never should for these layouts)
        out[...] = r.T


@njit(cache=True)
def add_bias_cpu(A, b):
    """A[i, j] += b[j] for every row i (in place)."""
    m, n = A.shape
    for i in range(m):
        for j in range(n):
            A[i, j] += b[j]


@njit(cache=True)
def append_ones_cpu(H, out):
    """out = [H 1]: H (m, n) with a column of ones appended, out (m, n + 1)."""
    m, n = H.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = H[i, j]
        out[i, n] = 1


@njit(cache=True)
def col_sum_cpu(A, out):
    """out[j] = sum_i A[i, j]."""
    m, n = A.shape
    for j in range(n):
        out[j] = 0
    for i in range(m):
        for j in range(n):
            out[j] += A[i, j]


@njit(cache=True)
def col_sum_axpy_cpu(a, A, out, y):
    """out[j] = sum_i A[i, j], then y += a * out: a bias's gradient and its SGD
    step in one call (col_sum_cpu, then axpy_cpu: the same bits)."""
    col_sum_cpu(A, out)
    axpy_cpu(a, out, y)


@njit(cache=True)
def axpy_cpu(a, x, y):
    """y += a * x (flat vectors, in place)."""
    for i in range(x.shape[0]):
        y[i] += a * x[i]


@njit(cache=True)
def scale_cpu(a, x):
    """x *= a (in place)."""
    for i in range(x.shape[0]):
        x[i] *= a


@njit(cache=True, fastmath={"reassoc"})
def dot_cpu(x, y):
    """sum_i x[i] y[i], accumulated in float64. reassoc (and nothing else of
    fastmath: NaN and inf still propagate) lets LLVM keep several float64
    partial sums in SIMD lanes: 6x faster than the serial chain on 2.8M
    entries, and no less accurate (the CUDA twin sums in a tree, too)."""
    s = 0.0
    for i in range(x.shape[0]):
        s += np.float64(x[i]) * np.float64(y[i])
    return s


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning and argument order as the CPU twins above. Defining a @cuda.jit
# kernel needs no GPU (compilation happens at the first launch, or in
# `cuda.compile_ptx`), so this module imports on any machine. Launch
# configurations are chosen by tinynet.cuda_backend from the shapes.
#
# Typed constants (`A.dtype.type(0)`, `float64(0)`) keep float32 kernels in
# float32 when compiled (a bare `0.0` would be float64 on the device; the
# simulator would not show it, TOOLCHAIN.md).
from numba import cuda, float64  # noqa: E402  (CUDA section of the module)

TILE = 16      # matmul: a TILE x TILE block of threads computes a TILE x TILE tile of out
STORE, ACCUMULATE, BIAS = 0, 1, 2     # the matmul kernels' epilogues (matmul_nn_cuda)
TILE_P = 17    # shared tiles padded by one column: transposed stores hit 17 different banks
DOT_TPB = 256  # dot: threads per block, a power of two (tree reduction in shared memory)


@cuda.jit(device=True)
def _epilogue(out, i, j, acc, alpha, mode, b):
    """What the matmul kernels do with entry (i, j)'s sum `acc` (matmul_nn_cuda)."""
    if mode == ACCUMULATE:
        out[i, j] += alpha * acc
    elif mode == BIAS:
        out[i, j] = acc + b[j]
    else:
        out[i, j] = acc


@cuda.jit
def matmul_nn_cuda(A, B, out, alpha, mode, b):
    """out = A @ B, shared-memory tiled. Thread (ty, tx) of block (by, bx)
    computes out[by*TILE + ty, bx*TILE + tx]; each of the k / TILE steps stages
    sA = A[rows, t0:t0+TILE] and sB = B[t0:t0+TILE, cols] in shared memory.
    Ragged edges: loads outside A or B read 0, stores outside out are skipped
    (no thread returns early: every thread must reach each syncthreads).
    The epilogue, shared by the four kernels, is chosen by `mode`: STORE
    writes the sum; ACCUMULATE adds it, out += alpha A @ B (alpha of out's
    dtype: the backend's matmul_acc); BIAS adds b[j] to it, out = A @ B + b
    (a Linear stage's forward). Each in one launch, with the bits of the
    product stored and then an axpy or add_bias (the sum is the same float,
    and the update the same expression). `b` is read only with BIAS."""
    sA = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    sB = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    m, n = out.shape
    k = A.shape[1]
    i = cuda.blockIdx.y * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    zero = A.dtype.type(0)
    acc = zero
    for t0 in range(0, k, TILE):
        sA[ty, tx] = A[i, t0 + tx] if i < m and t0 + tx < k else zero
        sB[ty, tx] = B[t0 + ty, j] if t0 + ty < k and j < n else zero
        cuda.syncthreads()
        for c in range(TILE):
            acc += sA[ty, c] * sB[c, tx]
        cuda.syncthreads()
    if i < m and j < n:
        _epilogue(out, i, j, acc, alpha, mode, b)


@cuda.jit
def matmul_nt_cuda(A, B, out, alpha, mode, b):
    """out = A @ B.T  (B stored as (n, k)). B's tile is read along B's rows
    (consecutive threads, consecutive addresses) and stored transposed."""
    sA = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    sB = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    m, n = out.shape
    k = A.shape[1]
    i = cuda.blockIdx.y * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    jb = cuda.blockIdx.x * TILE + ty          # row of B this thread loads
    zero = A.dtype.type(0)
    acc = zero
    for t0 in range(0, k, TILE):
        sA[ty, tx] = A[i, t0 + tx] if i < m and t0 + tx < k else zero
        sB[tx, ty] = B[jb, t0 + tx] if jb < n and t0 + tx < k else zero
        cuda.syncthreads()
        for c in range(TILE):
            acc += sA[ty, c] * sB[c, tx]
        cuda.syncthreads()
    if i < m and j < n:
        _epilogue(out, i, j, acc, alpha, mode, b)


@cuda.jit
def matmul_tn_cuda(A, B, out, alpha, mode, b):
    """out = A.T @ B  (A stored as (k, m)). A's tile is read along A's rows
    and stored transposed."""
    sA = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    sB = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    m, n = out.shape
    k = A.shape[0]
    i = cuda.blockIdx.y * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    ia = cuda.blockIdx.y * TILE + tx          # column of A this thread loads
    zero = A.dtype.type(0)
    acc = zero
    for t0 in range(0, k, TILE):
        sA[tx, ty] = A[t0 + ty, ia] if t0 + ty < k and ia < m else zero
        sB[ty, tx] = B[t0 + ty, j] if t0 + ty < k and j < n else zero
        cuda.syncthreads()
        for c in range(TILE):
            acc += sA[ty, c] * sB[c, tx]
        cuda.syncthreads()
    if i < m and j < n:
        _epilogue(out, i, j, acc, alpha, mode, b)


@cuda.jit
def matmul_tt_cuda(A, B, out, alpha, mode, b):
    """out = A.T @ B.T  (A stored as (k, m), B as (n, k))."""
    sA = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    sB = cuda.shared.array((TILE, TILE_P), dtype=A.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    m, n = out.shape
    k = A.shape[0]
    i = cuda.blockIdx.y * TILE + ty
    j = cuda.blockIdx.x * TILE + tx
    ia = cuda.blockIdx.y * TILE + tx
    jb = cuda.blockIdx.x * TILE + ty
    zero = A.dtype.type(0)
    acc = zero
    for t0 in range(0, k, TILE):
        sA[tx, ty] = A[t0 + ty, ia] if t0 + ty < k and ia < m else zero
        sB[tx, ty] = B[jb, t0 + tx] if jb < n and t0 + tx < k else zero
        cuda.syncthreads()
        for c in range(TILE):
            acc += sA[ty, c] * sB[c, tx]
        cuda.syncthreads()
    if i < m and j < n:
        _epilogue(out, i, j, acc, alpha, mode, b)


@cuda.jit
def add_bias_cuda(A, b):
    """A[i, j] += b[j] for every row i (in place); one thread per entry."""
    m, n = A.shape
    for e in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        A[i, j] += b[j]


@cuda.jit
def append_ones_cuda(H, out):
    """out = [H 1] (m, n + 1); one thread per entry of out."""
    m, n1 = out.shape
    for e in range(cuda.grid(1), m * n1, cuda.gridsize(1)):
        i = e // n1
        j = e - i * n1
        if j < n1 - 1:
            out[i, j] = H[i, j]
        else:                          # the ones column; H has no entry here
            out[i, j] = out.dtype.type(1)


@cuda.jit(device=True)
def _column_sum(A, j):
    """sum_i A[i, j] in A's dtype, rows in order (as the CPU twin, so float32
    sums round the same way)."""
    acc = A.dtype.type(0)
    for i in range(A.shape[0]):
        acc += A[i, j]
    return acc


@cuda.jit
def col_sum_cuda(A, out):
    """out[j] = sum_i A[i, j]; one thread per column."""
    for j in range(cuda.grid(1), A.shape[1], cuda.gridsize(1)):
        out[j] = _column_sum(A, j)


@cuda.jit
def col_sum_axpy_cuda(a, A, out, y):
    """out[j] = sum_i A[i, j] and y[j] += a * out[j]; one thread per column:
    col_sum_cuda and axpy_cuda in one launch, with their bits."""
    for j in range(cuda.grid(1), A.shape[1], cuda.gridsize(1)):
        acc = _column_sum(A, j)
        out[j] = acc
        y[j] += a * acc


@cuda.jit
def axpy_cuda(a, x, y):
    """y += a * x (flat vectors, in place)."""
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        y[i] += a * x[i]


@cuda.jit
def scale_cuda(a, x):
    """x *= a (in place)."""
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[i] *= a


@cuda.jit
def fill_cuda(x, v):
    """x[:] = v (flat): device-side zeros, no host buffer uploaded."""
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        x[i] = v


@cuda.jit
def dot_cuda(x, y, partial):
    """partial[b] = the float64 sum of x[i] y[i] over the entries block b visits
    (grid-stride), reduced as a tree in shared memory; the caller adds the
    partials (one per block) in float64. Needs blockDim.x == DOT_TPB. No atomics:
    for a fixed launch configuration the result is the same on every run."""
    s = cuda.shared.array(DOT_TPB, dtype=float64)
    t = cuda.threadIdx.x
    acc = float64(0)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        acc += float64(x[i]) * float64(y[i])
    s[t] = acc
    cuda.syncthreads()
    h = DOT_TPB // 2
    while h > 0:
        if t < h:
            s[t] += s[t + h]
        cuda.syncthreads()
        h //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = s[0]
