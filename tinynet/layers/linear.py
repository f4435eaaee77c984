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

    def out_features(self, in_features):
        if in_features != self.n_in:
            raise ValueError(f"{self!r} receives {in_features} features, expects {self.n_in}")
        return self.n_out

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
        a = bk.matmul(h, self.WT)
        bk.add_bias(a, self.b)
        return a, (h,)

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

    def jvp(self, ctx, dz_in, dx):
        bk = self.bk
        (h,) = ctx
        out = None
        if dz_in is not None:
            out = bk.matmul(dz_in, self.WT)
        if dx is not None:
            dWT, db = self.split(dx)
            t = bk.matmul(h, dWT)
            bk.add_bias(t, db)
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


def _add(bk, x, y):
    """x + y for same-shape 2-D backend arrays (x updated in place)."""
    bk.axpy(1.0, y.reshape(-1), x.reshape(-1))
    return x
