"""Linear stage: a = W h + b.

Index legend: n batch, i in-features (n_in), o out-features (n_out),
p = o*i + o parameters. W is (o, i), b is (o,); the stage's slice of the flat
vector is [vec(W); b] with vec column-major (DESIGN.md), so W is an
F-ordered view of the flat vector and W.T a C-ordered one.

Batch form: A = H W^T + 1 b^T.  Per example, grad_x f = [h^T ⊗ I_o, I_o]
(thesis 6.2.2: J_theta = (h^T 1) ⊗ J_a), grad_z f = W.
"""
import numpy as np

from tinynet.layers.base import Stage


class Linear(Stage):
    def __init__(self, n_in, n_out):
        super().__init__()
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"Linear({n_in}, {n_out}): sizes must be positive")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.n_params = self.n_in * self.n_out + self.n_out

    def __repr__(self):
        return f"Linear({self.n_in}, {self.n_out})"

    def set_input_shape(self, in_shape):
        in_shape = tuple(int(d) for d in in_shape)
        if len(in_shape) != 1:
            raise ValueError(f"{self!r} takes vectors of {self.n_in} features but receives examples of "
                             f"shape {in_shape}; put Flatten() before it")
        if in_shape[0] != self.n_in:
            raise ValueError(f"{self!r} receives {in_shape[0]} features (shape {in_shape}), "
                             f"expects {self.n_in} (shape ({self.n_in},))")
        self.in_shape, self.out_shape = in_shape, (self.n_out,)
        return self.out_shape

    # -- Kronecker rows (the chapter-6 statistics hook, shared with Conv2d) -----------
    # The gradient of the stage is [grad W^T; grad b^T] = [H 1]^T B for row
    # matrices H (m, fan_in) and B (m, fan_out); KFAC's A, G and ACP's C are
    # products of these rows. For a Linear layer the rows are the batch itself
    # (m = n, share = 1); the stage's slice of theta, reshaped (fan_in + 1,
    # fan_out), is [W^T; b^T].
    share = 1

    @property
    def fan_in(self):
        return self.n_in

    @property
    def fan_out(self):
        return self.n_out

    def kron_rows(self, ctx):
        """H (n, i): the input rows (backend array)."""
        return ctx[0]

    def kron_signal(self, ctx, b_out):
        """B (n, o): the output signal as rows (here b_out itself)."""
        return b_out

    def bind(self, bk, theta):
        self.bk = bk
        self.theta = theta
        self.WT = self.split(theta)[0]   # (i, o), C-ordered view: W.T
        self.b = theta[self.n_in * self.n_out:]

    @property
    def W(self):
        """(o, i) view of the weights (F-ordered)."""
        return self.WT.T

    def split(self, v):
        """A flat (p,) slice -> (dW^T as (i, o) view, db as (o,) view)."""
        k = self.n_in * self.n_out
        return v[:k].reshape(self.n_in, self.n_out), v[k:]

    def init_params(self, rng, dtype, next_activation=None, alpha=None, scheme="auto"):
        """Uniform init, zero bias (thesis 2.4.2). Glorot: Var W = alpha * 2/(i+o),
        He: Var W = alpha * 2/i; alpha = 1 gives the papers' values. `auto` picks He
        before a ReLU and Glorot otherwise."""
        if scheme == "auto":
            scheme = "he" if next_activation == "relu" else "glorot"
        a = 1.0 if alpha is None else float(alpha)
        if scheme == "glorot":
            var = a * 2.0 / (self.n_in + self.n_out)
        elif scheme == "he":
            var = a * 2.0 / self.n_in
        else:
            raise ValueError(f"unknown init scheme {scheme!r}: choose auto, glorot or he")
        r = np.sqrt(3.0 * var)   # U(-r, r) has variance r^2 / 3
        W = rng.uniform(-r, r, size=(self.n_out, self.n_in))
        return np.concatenate([W.ravel(order="F"), np.zeros(self.n_out)]).astype(dtype)

    def forward(self, h):
        bk = self.bk
        return bk.matmul_bias(h, self.WT, self.b), (h,)

    def vjp(self, ctx, b_out, grad=None, need_b_in=True):
        bk = self.bk
        (h,) = ctx
        if grad is not None:
            gWT, gb = self.split(grad)
            bk.matmul(h, b_out, out=gWT, ta=True)     # dW^T = H^T B  (sum over batch)
            bk.col_sum(b_out, out=gb)
        if not need_b_in:
            return None
        return bk.matmul(b_out, self.WT, tb=True)      # B W

    def vjp_sgd(self, ctx, b_out, theta, grad, alpha, need_b_in=True):
        """W^T -= alpha H^T B in one BLAS gemm with beta = 1 (the weight gradient
        is never written, nor read back by an axpy), after B W, which needs the
        W before the step; the bias's gradient 1^T B and its step in one
        col_sum_axpy (d entries)."""
        bk = self.bk
        (h,) = ctx
        b_in = bk.matmul(b_out, self.WT, tb=True) if need_b_in else None
        WT, b = self.split(theta)
        gWT, gb = self.split(grad)
        bk.matmul_acc(h, b_out, WT, alpha=-alpha, ta=True, scratch=gWT)
        bk.col_sum_axpy(-alpha, b_out, gb, b)
        return b_in

    def jvp(self, ctx, dz_in, dx):
        bk = self.bk
        (h,) = ctx
        out = None
        if dz_in is not None:
            out = bk.matmul(dz_in, self.WT)
        if dx is not None:
            dWT, db = self.split(dx)
            t = bk.matmul_bias(h, dWT, db)
            out = t if out is None else _add(bk, out, t)
        if out is None:
            out = bk.zeros((h.shape[0], self.n_out), h.dtype)
        return out

    # -- explicit per-example Jacobians (host numpy) --------------------------
    def jac_x(self, ctx):
        h = np.asarray(self.bk.to_host(ctx[0]))
        n, i, o = h.shape[0], self.n_in, self.n_out
        J = np.zeros((n, o, self.n_params), dtype=h.dtype)
        r = np.arange(o)
        for c in range(i):
            J[:, r, c * o + r] = h[:, c:c + 1]     # d a_r / d W[r, c] = h_c
        J[:, r, i * o + r] = 1.0                   # d a_r / d b_r = 1
        return J

    def jac_z(self, ctx):
        n = ctx[0].shape[0]
        W = np.asarray(self.bk.to_host(self.WT)).T
        return np.broadcast_to(W, (n,) + W.shape).copy()

    # -- second-order pieces (seed 001, "The Hessian"; used by tinynet.curvature) --
    # Per example, with param index x_i (W[r, c] at i = c*o + r, b_r at i*o + r):
    #   d a_j / d W[r, c] = delta_jr h_c, so the only nonzero second derivative is
    #   d^2 a_j / dW[j, c] dh_c = 1: grad_xx f = 0, grad_zz f = 0, and grad_zx f,
    #   grad_xz f are the constant 0/1 tensors below. Contracted with b:
    #   (b^T ⊗ I_p) grad_zx f dz = [vec(b dz^T); 0]   (a gradient-shaped term),
    #   (b^T ⊗ I_i) grad_xz f dx = dW^T b              (an input-shaped term).
    def hess_xx(self, ctx):
        """grad_xx f per example as (n, o, p, p): [j, i, k] = d^2 a_j / dx_i dx_k (= 0).
        Reshaped to (o*p, p) it is the seed's grad_xx f (rows vec(grad_x f))."""
        n = ctx[0].shape[0]
        return np.zeros((n, self.n_out, self.n_params, self.n_params))

    def hess_zx(self, ctx):
        """grad_zx f per example as (n, o, p, i): [j, x, k] = d^2 a_j / dx dh_k."""
        n, i, o = ctx[0].shape[0], self.n_in, self.n_out
        T = np.zeros((n, o, self.n_params, i))
        j, c = np.meshgrid(np.arange(o), np.arange(i), indexing="ij")
        T[:, j, c * o + j, c] = 1.0
        return T

    def hess_xz(self, ctx):
        """grad_xz f per example as (n, o, i, p): [j, m, x] = d^2 a_j / dh_m dx."""
        return np.ascontiguousarray(self.hess_zx(ctx).transpose(0, 1, 3, 2))

    def hess_zz(self, ctx):
        """grad_zz f per example as (n, o, i, i) (= 0: a is linear in h)."""
        n = ctx[0].shape[0]
        return np.zeros((n, self.n_out, self.n_in, self.n_in))

    def hvp_x(self, ctx, b, dz_in, dx, acc):
        """acc += sum_n (b_n^T ⊗ I_p)(grad_xx f dx + grad_zx f dz_n): the stage's
        row of D_b (D_xx + D_zx N^{-1} D_x↘) applied to a direction. For a Linear
        stage only the weight part gets dZ^T B (the bias part is 0). Backend
        arrays: b (n, o), dz_in (n, i) or None, acc (p,)."""
        if dz_in is not None:
            t = self.bk.matmul(dz_in, b, ta=True)             # (i, o) = dW^T layout
            self.bk.axpy(1.0, t.reshape(-1), acc[:self.n_in * self.n_out])
        return acc

    def hvp_z(self, ctx, b, dz_in, dx):
        """(b^T ⊗ I_i)(grad_xz f dx + grad_zz f dz_in) per example, (n, i): the
        stage's block of B_b (D_xz + D_zz N^{-1} D_x↘) = B dW; None when dx is None."""
        if dx is None:
            return None
        dWT, _ = self.split(dx)
        return self.bk.matmul(b, dWT, tb=True)                 # B dW, (n, i)

    # -- UBP's products for the SGD update delta = -lr [vec(H^T B); 1^T B] (optional
    # hooks of tinynet.optim.ubp; a stage without them gets jvp / hvp_z) ----------
    def ubp_delta_out(self, ctx, B, delta, lr):
        """Rows dW h_i + db = H dW^T + db, or in Gram form -lr (H H^T + 1 1^T) B
        (n^2 (i + o) instead of n i o flops), whichever is cheaper."""
        bk = self.bk
        (h,) = ctx
        n, i = h.shape
        o = B.shape[1]
        if n * (i + o) < i * o:
            Kg = bk.matmul(h, h, tb=True)
            bk.add_bias(Kg, bk.asarray(np.ones(n), Kg.dtype))
            dA = bk.matmul(Kg, B)
            bk.scale(-lr, dA.reshape(-1))
            return dA
        dWT, db = self.split(delta)
        dA = bk.matmul(h, dWT)
        bk.add_bias(dA, db)
        return dA

    def ubp_add_signal_delta(self, ctx, B, delta, lr, out):
        """out += B dW = -lr (B B^T) H (Gram form) or B dW directly."""
        bk = self.bk
        (h,) = ctx
        n, i = h.shape
        o = B.shape[1]
        if n * (i + o) < i * o:
            t = bk.matmul(bk.matmul(B, B, tb=True), h)
            bk.axpy(-lr, t.reshape(-1), out.reshape(-1))
        else:
            t = bk.matmul(B, self.split(delta)[0], tb=True)
            bk.axpy(1.0, t.reshape(-1), out.reshape(-1))
        return out

    # many directions at once, host numpy: dZ (C, n, i), dX (C, p); used by the
    # dense assembly of tinynet.curvature (column blocks of H, J)
    def _WT_host(self):
        return np.asarray(self.bk.to_host(self.WT))

    def jvp_many(self, ctx, dZ, dX):
        """(C, n, o): dz_out = grad_z f dz + grad_x f dx for C directions."""
        h = np.asarray(self.bk.to_host(ctx[0]))
        out = None if dZ is None else dZ @ self._WT_host()
        if dX is not None:
            C, k = dX.shape[0], self.n_in * self.n_out
            t = np.matmul(h, dX[:, :k].reshape(C, self.n_in, self.n_out))   # H dW_c^T, (C, n, o)
            t += dX[:, None, k:]
            out = t if out is None else out + t
        return out

    def vjp_many(self, ctx, Wv, need_in=True, need_x=True):
        """(grad_z f^T w (C, n, i) or None, sum_n grad_x f^T w (C, p) or None) for
        C backward vectors Wv (C, n, o); need_in / need_x: which of the two to form."""
        gX = None
        if need_x:
            h = np.asarray(self.bk.to_host(ctx[0]))
            C = Wv.shape[0]
            gX = np.empty((C, self.n_params), dtype=np.result_type(Wv, h))
            k = self.n_in * self.n_out
            np.matmul(h.T, Wv, out=gX[:, :k].reshape(C, self.n_in, self.n_out))   # H^T W_c = dW_c^T
            np.sum(Wv, axis=1, out=gX[:, k:])
        dZ = None
        if need_in:          # one GEMM over all C*n rows (a batched matmul would loop over C)
            C, n = Wv.shape[:2]
            dZ = (Wv.reshape(C * n, self.n_out) @ self._WT_host().T).reshape(C, n, self.n_in)
        return dZ, gX

    def hvp_x_many(self, ctx, B, dZ, dX):
        """hvp_x for C directions: (C, p) or None."""
        if dZ is None:
            return None
        C, k = dZ.shape[0], self.n_in * self.n_out
        out = np.zeros((C, self.n_params), dtype=np.result_type(dZ, B))
        np.matmul(dZ.transpose(0, 2, 1), B, out=out[:, :k].reshape(C, self.n_in, self.n_out))   # dZ_c^T B
        return out

    def hvp_z_many(self, ctx, B, dZ, dX):
        """hvp_z for C directions: (C, n, i) or None."""
        if dX is None:
            return None
        C, k = dX.shape[0], self.n_in * self.n_out
        return np.matmul(B, dX[:, :k].reshape(C, self.n_in, self.n_out).transpose(0, 2, 1))   # B dW_c


def _add(bk, x, y):
    """x + y for same-shape 2-D backend arrays (x updated in place)."""
    bk.axpy(1.0, y.reshape(-1), x.reshape(-1))
    return x
