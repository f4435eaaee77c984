"""A register-blocked CUDA GEMM, out = A @ B (issue 18, part 4): the candidate
to replace the 16x16 shared-memory tiles of `linalg.matmul_nn_cuda`, whose CPU
twin it shares (`linalg.matmul_nn_cpu`: same meaning, same arguments).

Not wired into the CUDA backend yet: `benchmarks/gpu_step.py` times it next to
the current kernel and cuBLAS on a lent GPU, and the backend switches when the
hardware says it is faster (target: >= 40% of cuBLAS fp32 at n = 4096; Numba
has no tensor-core access, so the ceiling is the fp32 FMA rate). Switching
means giving it the backend kernels' epilogues too (STORE / ACCUMULATE / BIAS,
`linalg.matmul_nn_cuda`: matmul, matmul_acc and matmul_bias are one launch each).

Scheme (float32 or float64, any strides): a block of 16 x 16 threads computes a
BM x BM = 64 x 64 tile of out, each thread a 4 x 4 register tile at rows
ty + 16 r and columns tx + 16 c (r, c = 0..3), so that its stores, and its
reads of the shared B tile, are consecutive across a half-warp. Per step of
BK = 16 along k the block stages A[rows, k-slice] (transposed, padded by one
column: conflict-free stores) and B[k-slice, cols] in shared memory, 4 loads
per thread each; every shared value read is then used 4 times from registers
(4 FMAs per 2 shared loads instead of 1 per 2). Ragged edges: loads outside A
or B read 0, stores outside out are skipped, and every thread reaches every
syncthreads.
"""
from numba import cuda

BM = 64       # rows and columns of out per block
BK = 16       # k per shared-memory step
TPB = 16      # threads per block along x and y (TPB * 4 == BM)
BMP = 65      # BM + 1: the padded stride of the transposed A tile (a literal: shared shapes must be constants)
NT = 256      # TPB * TPB threads per block


def launch(m, n):
    """(blocks, threads) of matmul_nn_rb_cuda for an (m, n) output."""
    return ((n + BM - 1) // BM, (m + BM - 1) // BM), (TPB, TPB)


@cuda.jit
def matmul_nn_rb_cuda(A, B, out):
    """out = A @ B, register-blocked (module docstring)."""
    sA = cuda.shared.array((BK, BMP), dtype=A.dtype)     # sA[kk, r] = A[row0 + r, t0 + kk]
    sB = cuda.shared.array((BK, BM), dtype=A.dtype)         # sB[kk, c] = B[t0 + kk, col0 + c]
    acc = cuda.local.array((4, 4), dtype=A.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TPB + tx
    m, n = out.shape
    k = A.shape[1]
    row0 = cuda.blockIdx.y * BM
    col0 = cuda.blockIdx.x * BM
    zero = A.dtype.type(0)
    for r in range(4):
        for c in range(4):
            acc[r, c] = zero
    for t0 in range(0, k, BK):
        for q in range(4):                     # A tile: 64 rows x 16 k, 1024 entries, 4 per thread
            e = tid + q * NT
            r = e // BK
            kk = e - r * BK
            gi = row0 + r
            gk = t0 + kk
            sA[kk, r] = A[gi, gk] if gi < m and gk < k else zero
        for q in range(4):                     # B tile: 16 k x 64 columns
            e = tid + q * NT
            kk = e // BM
            c = e - kk * BM
            gk = t0 + kk
            gj = col0 + c
            sB[kk, c] = B[gk, gj] if gk < k and gj < n else zero
        cuda.syncthreads()
        for kk in range(BK):
            a0 = sA[kk, ty]
            a1 = sA[kk, ty + TPB]
            a2 = sA[kk, ty + 2 * TPB]
            a3 = sA[kk, ty + 3 * TPB]
            for c in range(4):
                b = sB[kk, tx + c * TPB]
                acc[0, c] += a0 * b
                acc[1, c] += a1 * b
                acc[2, c] += a2 * b
                acc[3, c] += a3 * b
        cuda.syncthreads()
    for r in range(4):
        i = row0 + ty + r * TPB
        if i < m:
            for c in range(4):
                j = col0 + tx + c * TPB
                if j < n:
                    out[i, j] = acc[r, c]
