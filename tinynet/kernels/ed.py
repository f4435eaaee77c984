"""Eigendecomposition kernels (seed 004, backpropagation-friendly ED): the grouped
covariance and whitening maps of the ZCA / PCA stages, and the three backward
rules of the symmetric eigendecomposition (analytic, power iteration, hybrid).

Index legend: n batch, C channels (features of a vector row: P = 1), P = H*W
positions, D = C*P entries of a row (C-major: entry c*P + p), G groups of d
consecutive channels (channel c lies in group c // d), m = n*P samples per
channel, r eigenpairs kept per group (r = d for ZCA, k for PCA), K power
iterations.

  Z, A, B, out (rows)  (n, D)       image or vector rows              (DESIGN.md, "Images")
  mu, sa, sb, shift    (C,)         one entry per channel
  S, Wm, M, GW, out    (G, d, d)    one d x d matrix per group
  U                    (G, d, d)    all eigenvectors (columns), eigenvalues descending
  V, gV, dV            (G, d, r)    the r kept eigenvectors (columns) / their cotangents
  lam, glam, dlam      (G, r)       eigenvalues (U's kernels take lam (G, d))
  iters                (G, r, S, d) power-iteration iterates v_i^(0..K); S = K + 1, or
                                    S = 1: "stationary", every iterate is v_i (the hybrid)

Data kernels (one thread per written entry on the GPU; serial loops on the CPU):
  channel_mean   mu[c] = 1/m sum_{e,p} Z[e, cP+p]
  group_outer    out[g,a,b] = alpha sum_{e,p} (A[e,(gd+a)P+p] - sa[gd+a]) (B[e,(gd+b)P+p] - sb[gd+b])
                              + diag delta_ab      (covariance: A = B = Z, sa = sb = mu, alpha = 1/m, diag = eps)
  group_sym      out = A + A^T per group
  group_apply    out[e,(gd+a)P+p] (+)= alpha sum_b Wm[g,a,b] (Z[e,(gd+b)P+p] - mu[gd+b]) + shift[gd+a]
  assemble       Wm[g] = sum_i f[g,i] v_i v_i^T   (ZCA: f = lam^{-1/2}; PCA: f = 1)
  weights_vjp    gV[g,:,i] = f_i (GW + GW^T) v_i,  glam[g,i] = fp_i v_i^T GW v_i
  weights_jvp    dWm = sum_i fp_i dlam_i v_i v_i^T + f_i (dv_i v_i^T + v_i dv_i^T)

ED kernels (one thread per group: each is a short serial recursion over d x d
matrices; `work` (G, 2, d, d) and `vec` (G, 3, d) are scratch):
  spectral_vjp   gS = sym U (C o (U^T gV) + diag(glam)) U^T. K = 0: the analytic rule, the
                 draft's eq. (1) (Ionescu et al.'s matrix backprop), C = Kt^T, Kt_ij = 1/(lam_i - lam_j);
                 K > 0: the hybrid rule in closed form, C_ji = c_K(lam_i, lam_j) for j > i and
                 -c_{K-1}(lam_j, lam_i) for j < i, c_K(a, b) = (1/a) sum_{k<K} (b/a)^k
                 (= pi_vjp at stationary iterates; no deflated matrix, so no round-off from it)
  spectral_jvp   its forward mode: S = U^T dS U, dv_i = sum_{j != i} u_j C_ji S_ji, dlam_i = S_ii
  pi_forward     power iteration with deflation from the unit vectors V0 (draft eq. 3):
                 v^(k) = M_i v^(k-1) / ||M_i v^(k-1)||, lam_i = v^T M_i v (Rayleigh),
                 M_{i+1} = M_i - lam_i v v^T; status[g] = 1 where ||M_i v|| is 0 or not finite
  pi_vjp         reverse mode of that recursion (draft eq. 4, Ye et al.):
                 dL/dM_i += (I - v^(k) v^(k)T) / ||M_i v^(k-1)|| g_k v^(k-1)T,
                 g_{k-1} = M_i (I - v^(k) v^(k)T) / ||M_i v^(k-1)|| g_k,
                 plus the Rayleigh quotient and the deflation; with stationary iterates
                 (S = 1) this is the poster's hybrid gradient, eq. (2) / draft eq. (5), as
                 written (the stages use spectral_vjp's closed form of it, see tinynet.ed)
  pi_jvp         forward mode of the same recursion (the adjoint of pi_vjp)

Float32 arrays are computed in float32 (constants made with the array's dtype).
"""
import math

import numpy as np
from numba import cuda, njit

# ---------------------------------------------------------------- shared bodies
# Plain functions compiled twice: as @njit helpers for the CPU twins and as CUDA
# device functions for the GPU twins, so both run the same arithmetic in the
# same order. Two CPU twins do not use them: group_outer and group_apply, the
# O(m d^2) data passes, multiply (d, P) blocks through BLAS instead (one example
# and group at a time), which is ~10-30x faster than the per-entry loops on the CPU.


def _channel_mean_one(c, Z, mu, P):
    n = Z.shape[0]
    acc = Z.dtype.type(0)
    for e in range(n):
        for p in range(P):
            acc += Z[e, c * P + p]
    mu[c] = acc / Z.dtype.type(n * P)


def _group_outer_one(t, A, sa, B, sb, out, alpha, diag, P):
    d = out.shape[1]
    g = t // (d * d)
    a = (t // d) % d
    b = t % d
    ca = g * d + a
    cb = g * d + b
    acc = A.dtype.type(0)
    for e in range(A.shape[0]):
        for p in range(P):
            acc += (A[e, ca * P + p] - sa[ca]) * (B[e, cb * P + p] - sb[cb])
    v = alpha * acc
    if a == b:
        v += diag
    out[g, a, b] = v


def _group_sym_one(t, A, out):
    d = A.shape[1]
    g = t // (d * d)
    a = (t // d) % d
    b = t % d
    out[g, a, b] = A[g, a, b] + A[g, b, a]


def _group_apply_one(t, Z, mu, Wm, shift, out, alpha, P, accumulate):
    D = Z.shape[1]
    d = Wm.shape[1]
    e = t // D
    j = t - e * D
    c = j // P
    p = j - c * P
    g = c // d
    a = c - g * d
    acc = Z.dtype.type(0)
    for b in range(d):
        cb = g * d + b
        acc += Wm[g, a, b] * (Z[e, cb * P + p] - mu[cb])
    v = alpha * acc + shift[c]
    if accumulate:
        out[e, j] += v
    else:
        out[e, j] = v


def _assemble_one(t, V, f, Wm):
    d = V.shape[1]
    g = t // (d * d)
    a = (t // d) % d
    b = t % d
    acc = V.dtype.type(0)
    for i in range(V.shape[2]):
        acc += f[g, i] * V[g, a, i] * V[g, b, i]
    Wm[g, a, b] = acc


def _weights_vjp_one(t, GW, V, f, fp, gV, glam):
    d = V.shape[1]
    r = V.shape[2]
    g = t // r
    i = t - g * r
    q = V.dtype.type(0)
    for a in range(d):
        acc = V.dtype.type(0)
        for b in range(d):
            acc += (GW[g, a, b] + GW[g, b, a]) * V[g, b, i]
            q += V[g, a, i] * GW[g, a, b] * V[g, b, i]
        gV[g, a, i] = f[g, i] * acc
    glam[g, i] = fp[g, i] * q


def _weights_jvp_one(t, V, dV, f, fp, dlam, dWm):
    d = V.shape[1]
    g = t // (d * d)
    a = (t // d) % d
    b = t % d
    acc = V.dtype.type(0)
    for i in range(V.shape[2]):
        acc += fp[g, i] * dlam[g, i] * V[g, a, i] * V[g, b, i] \
            + f[g, i] * (dV[g, a, i] * V[g, b, i] + V[g, a, i] * dV[g, b, i])
    dWm[g, a, b] = acc


def _spectral_vjp_group(g, U, lam, gV, glam, out, work, K):
    """Spectral rule for group g: out = sym U B U^T, B_ji = C_ji (U^T gV)_ji (j != i),
    B_ii = glam_i, columns i < r only. K = 0: the analytic C_ji = 1/(lam_i - lam_j);
    K > 0: the hybrid's C_ji = c_K(lam_i, lam_j) (j > i), -c_{K-1}(lam_j, lam_i) (j < i),
    c_K(a, b) = (1/a) sum_{k<K} (b/a)^k, each term at most 1/a."""
    d = U.shape[1]
    r = gV.shape[2]
    zero = U.dtype.type(0)
    one = U.dtype.type(1)
    half = U.dtype.type(0.5)
    for j in range(d):                  # work[g, 0] = B  (d x r)
        for i in range(r):
            acc = zero
            for a in range(d):
                acc += U[g, a, j] * gV[g, a, i]
            if j == i:
                work[g, 0, j, i] = glam[g, i]
            elif K == 0:
                work[g, 0, j, i] = acc / (lam[g, i] - lam[g, j])
            else:
                if j > i:
                    big, small, terms, sign = lam[g, i], lam[g, j], K, one
                else:
                    big, small, terms, sign = lam[g, j], lam[g, i], K - 1, -one
                q = small / big
                term = one / big
                c = zero
                for k in range(terms):
                    c += term
                    term *= q
                work[g, 0, j, i] = sign * c * acc
    for a in range(d):                  # work[g, 1] = U B  (d x r)
        for i in range(r):
            acc = zero
            for j in range(d):
                acc += U[g, a, j] * work[g, 0, j, i]
            work[g, 1, a, i] = acc
    for a in range(d):                  # out = sym (U B) U_r^T
        for b in range(a, d):
            acc = zero
            for i in range(r):
                acc += work[g, 1, a, i] * U[g, b, i] + work[g, 1, b, i] * U[g, a, i]
            out[g, a, b] = half * acc
            out[g, b, a] = half * acc


def _spectral_jvp_group(g, U, lam, dS, dV, dlam, work, K):
    """Forward mode of the spectral rule for group g (dS symmetric):
    dv_i = sum_{j != i} u_j C_ji S_ji, dlam_i = S_ii, S = U^T dS U, C as in the vjp."""
    d = U.shape[1]
    r = dV.shape[2]
    zero = U.dtype.type(0)
    one = U.dtype.type(1)
    for a in range(d):                  # work[g, 0] = dS U_r
        for i in range(r):
            acc = zero
            for b in range(d):
                acc += dS[g, a, b] * U[g, b, i]
            work[g, 0, a, i] = acc
    for j in range(d):                  # work[g, 1] = C o U^T dS U_r  (C_ji S_ji)
        for i in range(r):
            acc = zero
            for a in range(d):
                acc += U[g, a, j] * work[g, 0, a, i]
            if j == i:
                dlam[g, i] = acc
                work[g, 1, j, i] = zero
            elif K == 0:
                work[g, 1, j, i] = acc / (lam[g, i] - lam[g, j])
            else:
                if j > i:
                    big, small, terms, sign = lam[g, i], lam[g, j], K, one
                else:
                    big, small, terms, sign = lam[g, j], lam[g, i], K - 1, -one
                q = small / big
                term = one / big
                c = zero
                for k in range(terms):
                    c += term
                    term *= q
                work[g, 1, j, i] = sign * c * acc
    for i in range(r):
        for a in range(d):
            acc = zero
            for j in range(d):
                acc += U[g, a, j] * work[g, 1, j, i]
            dV[g, a, i] = acc


def _pi_forward_group(g, M, V0, iters, V, lam, work, status):
    """Power iteration with deflation for group g; iters (G, r, K+1, d)."""
    d = M.shape[1]
    r = V0.shape[1]
    K = iters.shape[2] - 1
    zero = M.dtype.type(0)
    status[g] = 0
    for a in range(d):
        for b in range(d):
            work[g, 0, a, b] = M[g, a, b]
    for i in range(r):
        s = zero
        for a in range(d):
            s += V0[g, i, a] * V0[g, i, a]
        s = math.sqrt(s)
        if not (s > zero):
            status[g] = 1
            return
        for a in range(d):
            iters[g, i, 0, a] = V0[g, i, a] / s
        for k in range(1, K + 1):
            nu2 = zero
            for a in range(d):
                acc = zero
                for b in range(d):
                    acc += work[g, 0, a, b] * iters[g, i, k - 1, b]
                iters[g, i, k, a] = acc
                nu2 += acc * acc
            nu = math.sqrt(nu2)
            if not (nu > zero) or math.isinf(nu):
                status[g] = 1
                return
            for a in range(d):
                iters[g, i, k, a] = iters[g, i, k, a] / nu
        q = zero
        for a in range(d):
            for b in range(d):
                q += iters[g, i, K, a] * work[g, 0, a, b] * iters[g, i, K, b]
        lam[g, i] = q
        for a in range(d):
            V[g, a, i] = iters[g, i, K, a]
        for a in range(d):
            for b in range(d):
                work[g, 0, a, b] -= q * iters[g, i, K, a] * iters[g, i, K, b]


def _pi_vjp_group(g, M, iters, lam, gV, glam, out, K, work, vec):
    """Reverse mode of power iteration with deflation for group g.
    work[g, 0]: M_i (rebuilt from M_{r+1} by adding the deflations back),
    work[g, 1]: the cotangent of M_i; vec[g, 0]: g_k, vec[g, 1]: scratch."""
    d = M.shape[1]
    r = iters.shape[1]
    last = iters.shape[2] - 1           # K, or 0 for stationary iterates
    zero = M.dtype.type(0)
    two = M.dtype.type(2)
    half = M.dtype.type(0.5)
    for a in range(d):
        for b in range(d):
            work[g, 0, a, b] = M[g, a, b]
            work[g, 1, a, b] = zero
    for i in range(r):
        for a in range(d):
            for b in range(d):
                work[g, 0, a, b] -= lam[g, i] * iters[g, i, last, a] * iters[g, i, last, b]
    for i in range(r - 1, -1, -1):
        l = lam[g, i]
        for a in range(d):              # M_i = M_{i+1} + lam_i v v^T
            for b in range(d):
                work[g, 0, a, b] += l * iters[g, i, last, a] * iters[g, i, last, b]
        # deflation M_{i+1} = M_i - lam_i v v^T (work[g, 1] holds dL/dM_{i+1})
        q = zero
        for a in range(d):
            acc = zero
            for b in range(d):
                acc += (work[g, 1, a, b] + work[g, 1, b, a]) * iters[g, i, last, b]
                q += iters[g, i, last, a] * work[g, 1, a, b] * iters[g, i, last, b]
            vec[g, 0, a] = gV[g, a, i] - l * acc
        gl = glam[g, i] - q
        # Rayleigh quotient lam_i = v^T M_i v
        for a in range(d):
            acc = zero
            for b in range(d):
                acc += work[g, 0, a, b] * iters[g, i, last, b]
            vec[g, 0, a] += two * gl * acc
        for a in range(d):
            for b in range(d):
                work[g, 1, a, b] += gl * iters[g, i, last, a] * iters[g, i, last, b]
        # K power-iteration steps, last to first
        for k in range(K, 0, -1):
            ka = k - 1 if last > 0 else 0
            kb = k if last > 0 else 0
            nu2 = zero
            for a in range(d):
                acc = zero
                for b in range(d):
                    acc += work[g, 0, a, b] * iters[g, i, ka, b]
                nu2 += acc * acc
            nu = math.sqrt(nu2)
            bg = zero
            for a in range(d):
                bg += iters[g, i, kb, a] * vec[g, 0, a]
            for a in range(d):
                vec[g, 1, a] = (vec[g, 0, a] - iters[g, i, kb, a] * bg) / nu
            for a in range(d):
                for b in range(d):
                    work[g, 1, a, b] += vec[g, 1, a] * iters[g, i, ka, b]
            for a in range(d):
                acc = zero
                for b in range(d):
                    acc += work[g, 0, a, b] * vec[g, 1, b]
                vec[g, 0, a] = acc
    for a in range(d):
        for b in range(a, d):
            s = half * (work[g, 1, a, b] + work[g, 1, b, a])
            out[g, a, b] = s
            out[g, b, a] = s


def _pi_jvp_group(g, M, iters, lam, dS, dV, dlam, K, work, vec):
    """Forward mode of power iteration with deflation for group g (dS symmetric).
    work[g, 0]: M_i, work[g, 1]: dM_i; vec[g, 0]: dv, vec[g, 1]: scratch."""
    d = M.shape[1]
    r = iters.shape[1]
    last = iters.shape[2] - 1
    zero = M.dtype.type(0)
    two = M.dtype.type(2)
    for a in range(d):
        for b in range(d):
            work[g, 0, a, b] = M[g, a, b]
            work[g, 1, a, b] = dS[g, a, b]
    for i in range(r):
        for a in range(d):
            vec[g, 0, a] = zero
        for k in range(1, K + 1):
            ka = k - 1 if last > 0 else 0
            kb = k if last > 0 else 0
            nu2 = zero
            for a in range(d):
                acc = zero
                w = zero
                for b in range(d):
                    acc += work[g, 0, a, b] * iters[g, i, ka, b]
                    w += work[g, 1, a, b] * iters[g, i, ka, b] + work[g, 0, a, b] * vec[g, 0, b]
                nu2 += acc * acc
                vec[g, 1, a] = w
            nu = math.sqrt(nu2)
            bw = zero
            for a in range(d):
                bw += iters[g, i, kb, a] * vec[g, 1, a]
            for a in range(d):
                vec[g, 0, a] = (vec[g, 1, a] - iters[g, i, kb, a] * bw) / nu
        q = zero
        for a in range(d):
            for b in range(d):
                q += iters[g, i, last, a] * (work[g, 1, a, b] * iters[g, i, last, b]
                                             + two * work[g, 0, a, b] * vec[g, 0, b])
        dlam[g, i] = q
        l = lam[g, i]
        for a in range(d):
            dV[g, a, i] = vec[g, 0, a]
        for a in range(d):
            for b in range(d):
                va = iters[g, i, last, a]
                vb = iters[g, i, last, b]
                work[g, 1, a, b] -= q * va * vb + l * (vec[g, 0, a] * vb + va * vec[g, 0, b])
                work[g, 0, a, b] -= l * va * vb


# ---------------------------------------------------------------- CPU (@njit)
_channel_mean_c = njit(cache=True)(_channel_mean_one)
_group_outer_c = njit(cache=True)(_group_outer_one)
_group_sym_c = njit(cache=True)(_group_sym_one)
_group_apply_c = njit(cache=True)(_group_apply_one)
_assemble_c = njit(cache=True)(_assemble_one)
_weights_vjp_c = njit(cache=True)(_weights_vjp_one)
_weights_jvp_c = njit(cache=True)(_weights_jvp_one)
_spectral_vjp_c = njit(cache=True)(_spectral_vjp_group)
_spectral_jvp_c = njit(cache=True)(_spectral_jvp_group)
_pi_forward_c = njit(cache=True)(_pi_forward_group)
_pi_vjp_c = njit(cache=True)(_pi_vjp_group)
_pi_jvp_c = njit(cache=True)(_pi_jvp_group)


@njit(cache=True)
def channel_mean_cpu(Z, mu, P):
    for c in range(mu.shape[0]):
        _channel_mean_c(c, Z, mu, P)


@njit(cache=True)
def group_outer_cpu(A, sa, B, sb, out, alpha, diag, P):
    """Per example and group, the centred (d, P) blocks' product through BLAS."""
    G, d, _ = out.shape
    for g in range(G):
        acc = np.zeros((d, d), dtype=out.dtype)
        for e in range(A.shape[0]):
            Xa = A[e, g * d * P:(g + 1) * d * P].reshape((d, P)) - sa[g * d:(g + 1) * d].reshape((d, 1))
            Xb = B[e, g * d * P:(g + 1) * d * P].reshape((d, P)) - sb[g * d:(g + 1) * d].reshape((d, 1))
            acc += np.dot(Xa, Xb.T)
        for a in range(d):
            for b in range(d):
                out[g, a, b] = alpha * acc[a, b] + (diag if a == b else out.dtype.type(0))


@njit(cache=True)
def group_sym_cpu(A, out):
    for t in range(out.size):
        _group_sym_c(t, A, out)


@njit(cache=True)
def group_apply_cpu(Z, mu, Wm, shift, out, alpha, P, accumulate):
    """Per example and group, Wm[g] times the centred (d, P) block through BLAS."""
    G, d, _ = Wm.shape
    for e in range(Z.shape[0]):
        for g in range(G):
            lo, hi = g * d * P, (g + 1) * d * P
            Xc = Z[e, lo:hi].reshape((d, P)) - mu[g * d:(g + 1) * d].reshape((d, 1))
            Y = np.dot(np.ascontiguousarray(Wm[g]), Xc)
            for a in range(d):
                sh = shift[g * d + a]
                for p in range(P):
                    v = alpha * Y[a, p] + sh
                    if accumulate:
                        out[e, lo + a * P + p] += v
                    else:
                        out[e, lo + a * P + p] = v


@njit(cache=True)
def assemble_cpu(V, f, Wm):
    for t in range(Wm.size):
        _assemble_c(t, V, f, Wm)


@njit(cache=True)
def weights_vjp_cpu(GW, V, f, fp, gV, glam):
    for t in range(glam.size):
        _weights_vjp_c(t, GW, V, f, fp, gV, glam)


@njit(cache=True)
def weights_jvp_cpu(V, dV, f, fp, dlam, dWm):
    for t in range(dWm.size):
        _weights_jvp_c(t, V, dV, f, fp, dlam, dWm)


@njit(cache=True)
def spectral_vjp_cpu(U, lam, gV, glam, out, work, K):
    for g in range(U.shape[0]):
        _spectral_vjp_c(g, U, lam, gV, glam, out, work, K)


@njit(cache=True)
def spectral_jvp_cpu(U, lam, dS, dV, dlam, work, K):
    for g in range(U.shape[0]):
        _spectral_jvp_c(g, U, lam, dS, dV, dlam, work, K)


@njit(cache=True)
def pi_forward_cpu(M, V0, iters, V, lam, work, status):
    for g in range(M.shape[0]):
        _pi_forward_c(g, M, V0, iters, V, lam, work, status)


@njit(cache=True)
def pi_vjp_cpu(M, iters, lam, gV, glam, out, K, work, vec):
    for g in range(M.shape[0]):
        _pi_vjp_c(g, M, iters, lam, gV, glam, out, K, work, vec)


@njit(cache=True)
def pi_jvp_cpu(M, iters, lam, dS, dV, dlam, K, work, vec):
    for g in range(M.shape[0]):
        _pi_jvp_c(g, M, iters, lam, dS, dV, dlam, K, work, vec)


# ---------------------------------------------------------------- CUDA (@cuda.jit)
# Same meaning and argument order as the CPU twins; the backend launches them
# with `count` threads (the `count` of bk.launch): one per written entry for the
# data kernels, one per group for the ED kernels (grid-stride loops).
_channel_mean_d = cuda.jit(device=True)(_channel_mean_one)
_group_outer_d = cuda.jit(device=True)(_group_outer_one)
_group_sym_d = cuda.jit(device=True)(_group_sym_one)
_group_apply_d = cuda.jit(device=True)(_group_apply_one)
_assemble_d = cuda.jit(device=True)(_assemble_one)
_weights_vjp_d = cuda.jit(device=True)(_weights_vjp_one)
_weights_jvp_d = cuda.jit(device=True)(_weights_jvp_one)
_spectral_vjp_d = cuda.jit(device=True)(_spectral_vjp_group)
_spectral_jvp_d = cuda.jit(device=True)(_spectral_jvp_group)
_pi_forward_d = cuda.jit(device=True)(_pi_forward_group)
_pi_vjp_d = cuda.jit(device=True)(_pi_vjp_group)
_pi_jvp_d = cuda.jit(device=True)(_pi_jvp_group)


@cuda.jit
def channel_mean_cuda(Z, mu, P):
    for c in range(cuda.grid(1), mu.shape[0], cuda.gridsize(1)):
        _channel_mean_d(c, Z, mu, P)


@cuda.jit
def group_outer_cuda(A, sa, B, sb, out, alpha, diag, P):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        _group_outer_d(t, A, sa, B, sb, out, alpha, diag, P)


@cuda.jit
def group_sym_cuda(A, out):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        _group_sym_d(t, A, out)


@cuda.jit
def group_apply_cuda(Z, mu, Wm, shift, out, alpha, P, accumulate):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        _group_apply_d(t, Z, mu, Wm, shift, out, alpha, P, accumulate)


@cuda.jit
def assemble_cuda(V, f, Wm):
    for t in range(cuda.grid(1), Wm.size, cuda.gridsize(1)):
        _assemble_d(t, V, f, Wm)


@cuda.jit
def weights_vjp_cuda(GW, V, f, fp, gV, glam):
    for t in range(cuda.grid(1), glam.size, cuda.gridsize(1)):
        _weights_vjp_d(t, GW, V, f, fp, gV, glam)


@cuda.jit
def weights_jvp_cuda(V, dV, f, fp, dlam, dWm):
    for t in range(cuda.grid(1), dWm.size, cuda.gridsize(1)):
        _weights_jvp_d(t, V, dV, f, fp, dlam, dWm)


@cuda.jit
def spectral_vjp_cuda(U, lam, gV, glam, out, work, K):
    for g in range(cuda.grid(1), U.shape[0], cuda.gridsize(1)):
        _spectral_vjp_d(g, U, lam, gV, glam, out, work, K)


@cuda.jit
def spectral_jvp_cuda(U, lam, dS, dV, dlam, work, K):
    for g in range(cuda.grid(1), U.shape[0], cuda.gridsize(1)):
        _spectral_jvp_d(g, U, lam, dS, dV, dlam, work, K)


@cuda.jit
def pi_forward_cuda(M, V0, iters, V, lam, work, status):
    for g in range(cuda.grid(1), M.shape[0], cuda.gridsize(1)):
        _pi_forward_d(g, M, V0, iters, V, lam, work, status)


@cuda.jit
def pi_vjp_cuda(M, iters, lam, gV, glam, out, K, work, vec):
    for g in range(cuda.grid(1), M.shape[0], cuda.gridsize(1)):
        _pi_vjp_d(g, M, iters, lam, gV, glam, out, K, work, vec)


@cuda.jit
def pi_jvp_cuda(M, iters, lam, dS, dV, dlam, K, work, vec):
    for g in range(cuda.grid(1), M.shape[0], cuda.gridsize(1)):
        _pi_jvp_d(g, M, iters, lam, dS, dV, dlam, K, work, vec)
