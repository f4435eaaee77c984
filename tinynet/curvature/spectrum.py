"""Spectra of the curvature matrices: what preconditioning is for (issue 17).

  eigenvalues(A)                         all eigenvalues of a dense symmetric A
                                         (numpy eigvalsh), descending
  top_eigenvalues(net, X, Y, curvature, k)
                                         the k largest (algebraic) eigenvalues of
                                         H, G or F of the batch-mean loss for a net
                                         of any size, by scipy's Lanczos
                                         (scipy.sparse.linalg.eigsh, ARPACK's
                                         implicitly restarted Lanczos) over a
                                         LinearOperator whose matvec is hvp / gvp /
                                         fvp: the matrix is never formed.

Index legend: P parameters; v (P,) a direction; the products run where the net
lives and come back to the host as float64 for ARPACK.
"""
import numpy as np

from tinynet.curvature.passes import check_batch
from tinynet.curvature.products import fvp, gvp, hvp

PRODUCTS = {"hessian": hvp, "gn": gvp, "fisher": fvp}


def eigenvalues(A):
    """All eigenvalues of the symmetric matrix A (its lower triangle is read),
    float64, in descending order."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"eigenvalues: need a square matrix, got shape {A.shape}")
    return np.linalg.eigvalsh(A)[::-1]


def curvature_operator(net, X, Y, curvature="hessian", counter=None):
    """scipy LinearOperator (P, P) float64 with matvec v -> C v, C = H, G or F
    of the batch-mean loss at (X, Y) (products.hvp / gvp / fvp). counter: a
    dict whose "matvecs" entry counts the products."""
    from scipy.sparse.linalg import LinearOperator
    if curvature not in PRODUCTS:
        raise ValueError(f"curvature must be one of {', '.join(PRODUCTS)}, got {curvature!r}")
    X, Y = check_batch(net, X, Y, "curvature_operator")
    prod, P = PRODUCTS[curvature], net.n_params

    def matvec(v):
        if counter is not None:
            counter["matvecs"] = counter.get("matvecs", 0) + 1
        v = np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(P))
        return np.asarray(net.bk.to_host(prod(net, X, Y, v)), dtype=np.float64)

    return LinearOperator((P, P), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def top_eigenvalues(net, X, Y, curvature="hessian", k=10, tol=0.0, maxiter=None, seed=0, info=None):
    """The k largest eigenvalues (algebraic: the most positive) of H, G or F at
    (X, Y), descending, by scipy.sparse.linalg.eigsh (Lanczos) over
    curvature_operator; the start vector is standard normal from Generator(seed),
    so a run is reproducible. tol: ARPACK's relative accuracy (0 = machine
    precision). info: a dict that receives "matvecs", the products used."""
    from scipy.sparse.linalg import eigsh
    P = net.n_params
    if not 1 <= int(k) < P:
        raise ValueError(f"top_eigenvalues: k must lie in 1..{P - 1} for {P} parameters (Lanczos needs "
                         f"k < P); for all of them use eigenvalues() of the dense matrix")
    counter = {} if info is None else info
    op = curvature_operator(net, X, Y, curvature, counter)
    v0 = np.random.default_rng(seed).standard_normal(P)
    w = eigsh(op, k=int(k), which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
    return np.sort(w)[::-1]
