"""Every matrix of seed 001 for one example, dense and named as in the seed.

Index legend (seed 001, with tinynet's stages): stages l = 1 .. L, where
f_1 .. f_{L-1} are `net.layers` and f_L is the loss stage, parameter-free, whose
output z_L = l(z_{L-1}, y) is the example's scalar loss. a_l = |z_l| (a_0 the
input size, a_L = 1), p_l = |x_l| (0 for parameter-free stages), P = sum p_l.

Conventions (docs/errata.md lists where they differ from the seed's text):
  * grad_x f_l is the seed's D_l, (p_l, a_l): the TRANSPOSED Jacobian dz_l/dx_l, so
    that the gradient is D b. grad_z f_l is (a_{l-1}, a_l), transposed likewise.
  * the label y is a fixed argument of the loss stage, not carried through z_0
    (the seed subsumes it in z_0; since dz_0 = 0 either way, H is the same).
  * vec is column-major: vec(grad_x f_l)[i + p_l j] = d z_{l,j} / d x_{l,i}.
    Second derivatives: grad_xx f_l (a_l p_l, p_l) with row i + p_l j, column k
    = d^2 z_{l,j} / dx_i dx_k; grad_zx f_l (a_l p_l, a_{l-1}); grad_xz f_l
    (a_{l-1} a_l, p_l) with row m + a_{l-1} j = d/dx of vec(grad_z f_l);
    grad_zz f_l (a_{l-1} a_l, a_{l-1}).

Matrices (block rows / columns):
  D_x    (P, sum_{1..L} a_l)      block diag grad_x f_l                 (the seed's D)
  M      (sum_{1..L} a_l)^2        I on the diagonal, -grad_z f_{l+1} right of block l
  N      (sum_{0..L-1} a_l)^2      I on the diagonal, -grad_z f_l^T below block l-1
                                   (rows dz_0 .. dz_{L-1}; here grad_z f enters untransposed)
  D_x_shift (sum_{0..L-1} a_l, P)  D_x↘: block (row dz_l, column x_l) = grad_x f_l^T, l < L
  D_b    (P, sum a_l p_l)          block diag b_l^T ⊗ I_{p_l}
  B_b    (sum_{1..L} a_l, sum a_{l-1} a_l)  block (row l-1, column l) = b_l^T ⊗ I_{a_{l-1}}
  D_xx, D_zx, D_xz, D_zz           block diagonals of the second derivatives above
  b      [b_1 .. b_L], b_L = [1];  e_L the last unit vector; M b = e_L
  gradient = D_x M^{-1} e_L
  H = T1 + T2 + T3 + T4 ("The inverse of the Hessian"):
      T1 = D_b D_xx, T2 = D_b D_zx N^{-1} D_x↘, T3 = D_x M^{-1} B_b D_xz,
      T4 = D_x M^{-1} B_b D_zz N^{-1} D_x↘
"""
import numpy as np
import scipy.linalg

from tinynet.curvature.guard import check_dense

NAMES = {
    "M": "backprop matrix: I on the diagonal, -grad_z f_{l+1} beside it; M b = e_L (block upper bidiagonal)",
    "N": "forward-mode matrix: I on the diagonal, -grad_z f_l below it; N dz = D_x_shift dx (block lower bidiagonal)",
    "D_x": "block diagonal of grad_x f_l (transposed stage Jacobians dz_l/dx_l): gradient = D_x M^-1 e_L",
    "D_x_shift": "D_x shifted down one block row (seed's D_x↘), blocks dz_l/dx_l: the source of the forward recursion",
    "D_b": "block diagonal of b_l^T ⊗ I: contracts vec(d grad_x f_l) with b_l",
    "B_b": "b_l^T ⊗ I in block (l-1, l): contracts vec(d grad_z f_l) with b_l",
    "D_xx": "block diagonal of grad_xx f_l: second derivatives of each stage w.r.t. its parameters",
    "D_xz": "block diagonal of grad_xz f_l: d vec(grad_z f_l) / d x_l",
    "D_zx": "block diagonal of grad_zx f_l: d vec(grad_x f_l) / d z_{l-1}",
    "D_zz": "block diagonal of grad_zz f_l: second derivatives of each stage w.r.t. its input",
    "H": "the Hessian of the example's loss w.r.t. all parameters, T1 + T2 + T3 + T4",
    "T1": "D_b D_xx (parameter-parameter curvature inside each stage)",
    "T2": "D_b D_zx N^-1 D_x_shift (a stage's parameters against the parameters below it)",
    "T3": "D_x M^-1 B_b D_xz (the transpose of T2)",
    "T4": "D_x M^-1 B_b D_zz N^-1 D_x_shift (curvature of the stages' inputs, carried back)",
}


def _blockdiag(blocks, shapes):
    """scipy.linalg.block_diag that keeps empty (0-row or 0-column) blocks in place."""
    R = sum(s[0] for s in shapes)
    Cn = sum(s[1] for s in shapes)
    out = np.zeros((R, Cn))
    r = c = 0
    for B, (h, w) in zip(blocks, shapes):
        out[r:r + h, c:c + w] = B
        r += h
        c += w
    return out


def _offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int)


class SeedMatrices:
    """The arrays of seed 001 for one example (attributes named as in NAMES, plus
    `b` (list of b_l), `e_L`, `gradient`, `terms` = (T1, T2, T3, T4), `a`
    (activation sizes a_0 .. a_L), `p` (parameter sizes p_1 .. p_L), `stages`
    (stage names, the loss last)). `as_dict()` gives name -> array; the repr
    lists the stages, the sizes and every matrix with its shape."""

    def __repr__(self):
        if not hasattr(self, "H"):
            return "SeedMatrices(empty)"
        names = ("M", "N", "D_x", "D_x_shift", "D_b", "B_b", "D_xx", "D_xz", "D_zx", "D_zz", "H")
        mats = ", ".join(f"{k} {getattr(self, k).shape}" for k in names)
        terms = ", ".join(f"T{i} {T.shape}" for i, T in enumerate(self.terms, start=1))
        return (f"SeedMatrices(one example, seed 001; {len(self.p)} stages f_1..f_L = {', '.join(self.stages)}\n"
                f"  activation sizes a_0..a_L = {list(self.a)}, parameter sizes p_1..p_L = {list(self.p)}\n"
                f"  {mats}\n  {terms} (H = T1 + T2 + T3 + T4)\n"
                f"  gradient {self.gradient.shape}, e_L {self.e_L.shape}, "
                f"b_1..b_L of sizes {[len(b) for b in self.b]})")

    def as_dict(self):
        d = {k: getattr(self, k) for k in ("M", "N", "D_x", "D_x_shift", "D_b", "B_b",
                                             "D_xx", "D_xz", "D_zx", "D_zz", "H", "gradient", "e_L")}
        d.update(zip(("T1", "T2", "T3", "T4"), self.terms))
        for l, b in enumerate(self.b, start=1):
            d[f"b_{l}"] = b
        return d

    def blocks(self, name):
        """(row block sizes, column block sizes, row labels, column labels) of
        matrix `name`, for plotting its block structure."""
        a, p, L = self.a, self.p, len(self.p)
        z_rows = [f"z{l}" for l in range(1, L + 1)]
        dz = [f"dz{l}" for l in range(L)]
        x = [f"x{l}" for l in range(1, L + 1)]
        vxx = [f"vec d∇x f{l}" for l in range(1, L + 1)]
        vzz = [f"vec d∇z f{l}" for l in range(1, L + 1)]
        pa = [p[l] * a[l + 1] for l in range(L)]
        aa = [a[l] * a[l + 1] for l in range(L)]
        table = {
            "M": (a[1:], a[1:], z_rows, z_rows), "N": (a[:-1], a[:-1], dz, dz),
            "D_x": (p, a[1:], x, z_rows), "D_x_shift": (a[:-1], p, dz, x),
            "D_b": (p, pa, x, vxx), "B_b": (a[1:], aa, z_rows, vzz),
            "D_xx": (pa, p, vxx, x), "D_zx": (pa, a[:-1], vxx, dz),
            "D_xz": (aa, p, vzz, x), "D_zz": (aa, a[:-1], vzz, dz),
        }
        for t in ("H", "T1", "T2", "T3", "T4"):
            table[t] = (p, p, x, x)
        return table[name]


def _example(net, z0, y0):
    z0 = np.asarray(z0)
    if z0.ndim == 2 and z0.shape[0] == 1:
        z0 = z0[0]
    if z0.shape != (net.n_in,):
        raise ValueError(f"matrices: z0 must be one input of shape ({net.n_in},), got {z0.shape}")
    y0 = np.asarray(y0)
    Y = y0.reshape(1) if y0.ndim == 0 else y0.reshape(1, -1)
    return z0[None, :], Y


def dense_bytes(net):
    """Bytes of float64 storage that `matrices` allocates for `net` (its largest arrays)."""
    a, p = _sizes(net)
    L = len(p)
    A1, A0, P = sum(a[1:]), sum(a[:-1]), sum(p)
    PA = sum(p[l] * a[l + 1] for l in range(L))
    AA = sum(a[l] * a[l + 1] for l in range(L))
    n = A1 * A1 + A0 * A0 + P * A1 + A0 * P + P * PA + A1 * AA + PA * P + PA * A0 + AA * P + AA * A0 + 6 * P * P
    return 8 * n


def _sizes(net):
    a = list(net.sizes) + [1]
    p = [s.n_params for s in net.layers] + [0]
    return a, p


def matrices(net, z0, y0, max_bytes=None):
    """Seed 001's matrices for the example (z0, y0) at the network's current
    parameters, dense float64 host arrays (module docstring). z0: one input
    (n_in,); y0: its target as the loss takes it (class id or row).

    Checks: D_x M^{-1} e_L is the example's gradient (see tests), H is the
    Hessian of its loss. Refuses networks whose arrays exceed the dense limit."""
    check_dense(net, max_bytes, nbytes=dense_bytes(net), what="seed 001's matrices")
    X, Y = _example(net, z0, y0)
    stages = list(net.layers) + [net.loss_stage]
    F, ctxs = net.forward_ctx(X)
    _, lctx = net.loss_stage.forward(F, net.as_target(Y))
    ctxs = ctxs + [lctx]
    a, p = _sizes(net)
    L = len(stages)

    Jx = [np.asarray(s.jac_x(c), dtype=np.float64)[0] for s, c in zip(stages, ctxs)]   # (a_l, p_l)
    Jz = [np.asarray(s.jac_z(c), dtype=np.float64)[0] for s, c in zip(stages, ctxs)]   # (a_l, a_{l-1})
    Txx = [np.asarray(s.hess_xx(c))[0] for s, c in zip(stages, ctxs)]   # (a_l, p_l, p_l)
    Tzx = [np.asarray(s.hess_zx(c))[0] for s, c in zip(stages, ctxs)]   # (a_l, p_l, a_{l-1})
    Txz = [np.asarray(s.hess_xz(c))[0] for s, c in zip(stages, ctxs)]   # (a_l, a_{l-1}, p_l)
    Tzz = [np.asarray(s.hess_zz(c))[0] for s, c in zip(stages, ctxs)]   # (a_l, a_{l-1}, a_{l-1})

    m = SeedMatrices()
    m.a, m.p = a, p
    m.stages = [repr(s) for s in stages]
    grad_x = [J.T for J in Jx]                  # seed's grad_x f_l, (p_l, a_l)
    grad_z = [J.T for J in Jz]                  # seed's grad_z f_l, (a_{l-1}, a_l)

    # backward vectors: b_L = 1, b_{l-1} = grad_z f_l b_l
    b = [None] * L
    b[L - 1] = np.ones(1)
    for l in range(L - 1, 0, -1):
        b[l - 1] = grad_z[l] @ b[l]
    m.b = b

    oa1 = _offsets(a[1:])                       # blocks z_1 .. z_L
    oa0 = _offsets(a[:-1])                      # blocks dz_0 .. dz_{L-1}
    op = _offsets(p)
    A1, A0, P = oa1[-1], oa0[-1], op[-1]

    m.D_x = _blockdiag(grad_x, [(p[l], a[l + 1]) for l in range(L)])
    m.M = np.eye(A1)
    for l in range(1, L):                       # block (l-1, l) = -grad_z f_{l+1} (0-based l)
        m.M[oa1[l - 1]:oa1[l], oa1[l]:oa1[l + 1]] = -grad_z[l]
    m.e_L = np.zeros(A1)
    m.e_L[-1] = 1.0
    m.N = np.eye(A0)
    for l in range(1, L):                       # row dz_l, column dz_{l-1}: -dz_l/dz_{l-1}
        m.N[oa0[l]:oa0[l + 1], oa0[l - 1]:oa0[l]] = -Jz[l - 1]
    m.D_x_shift = np.zeros((A0, P))
    for l in range(1, L):                       # row dz_l, column x_l: dz_l/dx_l
        m.D_x_shift[oa0[l]:oa0[l + 1], op[l - 1]:op[l]] = Jx[l - 1]

    m.D_b = _blockdiag([np.kron(b[l][None, :], np.eye(p[l])) for l in range(L)],
                       [(p[l], a[l + 1] * p[l]) for l in range(L)])
    oaa = _offsets([a[l] * a[l + 1] for l in range(L)])
    m.B_b = np.zeros((A1, oaa[-1]))
    for l in range(1, L):                       # row block l-1 (z_l in 1-based), column vec(d grad_z f_{l+1})
        m.B_b[oa1[l - 1]:oa1[l], oaa[l]:oaa[l + 1]] = np.kron(b[l][None, :], np.eye(a[l]))

    pa = [(a[l + 1] * p[l], p[l], a[l]) for l in range(L)]        # (rows, p_l, a_{l-1})
    aa = [(a[l + 1] * a[l], p[l], a[l]) for l in range(L)]
    m.D_xx = _blockdiag([T.reshape(r, q) for T, (r, q, _) in zip(Txx, pa)], [(r, q) for r, q, _ in pa])
    m.D_zx = _blockdiag([T.reshape(r, i) for T, (r, _, i) in zip(Tzx, pa)], [(r, i) for r, _, i in pa])
    m.D_xz = _blockdiag([T.reshape(r, q) for T, (r, q, _) in zip(Txz, aa)], [(r, q) for r, q, _ in aa])
    m.D_zz = _blockdiag([T.reshape(r, i) for T, (r, _, i) in zip(Tzz, aa)], [(r, i) for r, _, i in aa])

    Minv_e = scipy.linalg.solve_triangular(m.M, m.e_L, lower=False, unit_diagonal=True)
    m.gradient = m.D_x @ Minv_e
    Ninv_Dsh = scipy.linalg.solve_triangular(m.N, m.D_x_shift, lower=True, unit_diagonal=True)
    DxMinv = scipy.linalg.solve_triangular(m.M, m.D_x.T, lower=False, unit_diagonal=True, trans=1).T
    T1 = m.D_b @ m.D_xx
    T2 = m.D_b @ (m.D_zx @ Ninv_Dsh)
    T3 = DxMinv @ (m.B_b @ m.D_xz)
    T4 = DxMinv @ (m.B_b @ (m.D_zz @ Ninv_Dsh))
    m.terms = (T1, T2, T3, T4)
    m.H = T1 + T2 + T3 + T4
    return m
