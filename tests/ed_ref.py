"""Independent torch (float64) references for seed 004's eigendecomposition rules and
the ZCA / PCA stages, written from the draft's equations, not from tinynet's code.

`torch_ed(M, rule, K, r, V0)` -> (V (d, r), lam (r,)) as a torch function of M (d, d)
whose autograd gradient is the rule's:
  "svd": torch.linalg.eigh (its backward is the analytic Kt rule);
  "pi": K power iterations from V0 with deflation M_{i+1} = M_i - lam_i v v^T,
        lam_i = v^T M_i v (Rayleigh), differentiated through every iteration;
  "hybrid": the same graph with every iterate's value replaced by the eigh eigenvector
        (value u, derivative that of one power-iteration step at u).
`torch_stage(Z, ...)` the stage's formula on rows (n, C*P)."""
import numpy as np
import torch


def _eigh_desc(M):
    lam, U = torch.linalg.eigh(M)
    return lam.flip(0), U.flip(1)


def torch_ed(M, rule, K, r, V0=None):
    if rule == "svd":
        lam, U = _eigh_desc(M)
        return U[:, :r], lam[:r]
    U = _eigh_desc(M.detach())[1] if rule == "hybrid" else None
    Mi, vs, ls = M, [], []
    for i in range(r):
        if rule == "pi":
            v = torch.as_tensor(V0[i], dtype=M.dtype)
            v = v / v.norm()
        else:
            v = U[:, i]
        for _ in range(K):
            y = Mi @ v
            step = y / y.norm()
            v = step if rule == "pi" else step - step.detach() + U[:, i]
        lam = v @ Mi @ v
        vs.append(v)
        ls.append(lam)
        Mi = Mi - lam * torch.outer(v, v)
    return torch.stack(vs, 1), torch.stack(ls)


def torch_stage(Z, C, G, P, eps, kind, rule, K, r, V0=None):
    """ZCA (kind "zca") or PCA ("pca") of rows Z (n, C*P), groups of d = C/G channels."""
    n = Z.shape[0]
    d, m = C // G, n * P
    X = Z.reshape(n, C, P).permute(1, 0, 2).reshape(C, m)
    outs = []
    for g in range(G):
        x = X[g * d:(g + 1) * d]
        mu = x.mean(1, keepdim=True)
        xc = x - mu
        S = xc @ xc.T / m + eps * torch.eye(d, dtype=Z.dtype)
        V, lam = torch_ed(S, rule, K, r, None if V0 is None else V0[g])
        if kind == "zca":
            W = (V * lam.clamp_min(eps) ** -0.5) @ V.T
            outs.append(W @ xc)
        else:
            outs.append(V @ V.T @ xc + mu)
    return torch.cat(outs).reshape(C, n, P).permute(1, 0, 2).reshape(n, C * P)


def sign_align(V, Vref):
    """V with each column's sign flipped to agree with Vref's."""
    s = np.sign(np.sum(V * Vref, axis=0))
    s[s == 0] = 1
    return V * s
