"""Step-size control for the Kronecker-factored preconditioners: a trust region
on the change that the curvature model predicts (the "KL clipping" of Ba,
Grosse and Martens 2017, for the Fisher: delta^T F delta approximates twice the
KL divergence between the predictive distributions before and after the step;
for Gauss-Newton the same quadratic form measures the predicted change of the
output, delta^T J^T D J delta).

Index legend: n batch, i / o a Linear layer's inputs / outputs; H (n, i) its
input batch, B (n, o) = (1/n) grad_a l_i, Gamma = B^T [H 1] (o, i+1) the
layer's gradient [grad W, grad b]; K_d = A_d ⊗ G_d the damped Kronecker block.

For an update delta = - lr K_d^{-1} g the curvature model predicts
  delta^T K_d delta = lr^2 q,   q = sum over layers of vec(Gamma)^T K_d^{-1} vec(Gamma)
and the update is scaled by
  nu = min(1, sqrt(kl_clip / (lr^2 q))),
so that lr^2 nu^2 q <= kl_clip. A fixed learning rate makes a damped
Newton-type step either timid (large damping: KFAC then behaves like SGD) or
unsafe (small damping: the factors of one statistics batch, kept for T
updates, send the first steps far outside the region where the quadratic
model holds; on the MNIST autoencoder eps = 0.1 diverged within 5 updates).
The clip lets the damping be small and bounds every step.

q without forming Gamma (which would cost the weight-gradient GEMM the
preconditioners replace):
  vec(Gamma)^T (A_d^{-1} ⊗ G_d^{-1}) vec(Gamma) = tr(Gamma^T G_d^{-1} Gamma A_d^{-1})
    = < B G_d^{-1} B^T , [H 1] A_d^{-1} [H 1]^T >_F
two n x n GEMMs from the batch matrices the update already formed.
"""
import numpy as np


def layer_q(bk, B, BGinv, H1, H1Ainv, acc=None):
    """vec(Gamma)^T (A_d ⊗ G_d)^{-1} vec(Gamma) of one Linear layer (host float):
    < B G_d^{-1} B^T , [H 1] A_d^{-1} [H 1]^T >_F. With `acc` (a float64 backend
    vector) it is added to acc[0] where acc lives instead (bk.dot_acc) and
    None is returned.

    B (n, o), BGinv = B G_d^{-1} (n, o), H1 = [H 1] (n, i+1), H1Ainv =
    [H 1] A_d^{-1} (n, i+1); backend arrays."""
    X = bk.matmul(BGinv, B, tb=True)                  # (n, n) B G_d^{-1} B^T
    Y = bk.matmul(H1Ainv, H1, tb=True)                # (n, n) [H 1] A_d^{-1} [H 1]^T
    n = X.shape[0]
    if acc is not None:
        return bk.dot_acc(X.reshape(n * n), Y.reshape(n * n), acc, 0)
    return bk.dot(X.reshape(n * n), Y.reshape(n * n))


def clip_factor(q, lr, kl_clip):
    """nu = min(1, sqrt(kl_clip / (lr^2 q))); 1 when kl_clip is None or q <= 0."""
    if kl_clip is None or not q > 0:
        return 1.0
    return float(min(1.0, np.sqrt(kl_clip / (lr * lr * q))))
