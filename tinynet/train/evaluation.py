"""Evaluation: the loss (and a classifier's error rate) on a whole set or a
fixed seeded subset, in chunks of rows, with every stage in eval mode."""
import numpy as np


def evaluate(net, X, Y, chunk=2000, autoencode=False):
    """(mean loss, error rate or None) of net on (X, Y), in chunks of rows.
    The error rate is computed when Y holds integer class ids. Stages run in
    eval mode (batch norm uses its running statistics and leaves them alone);
    the previous mode is restored."""
    modes = [s.training for s in net.layers]
    net.train(False)
    try:
        return _evaluate(net, X, Y, chunk, autoencode)
    finally:
        for s, m in zip(net.layers, modes):
            s.training = m


def _evaluate(net, X, Y, chunk, autoencode):
    classify = Y.ndim == 1 and np.issubdtype(Y.dtype, np.integer)
    n = X.shape[0]
    total, wrong = 0.0, 0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        Xc = net.as_input(X[a:b])
        Yc = Xc if autoencode else net.as_target(Y[a:b])
        F, _ = net.forward_ctx(Xc)
        value, _ = net.loss_stage.forward(F, Yc)
        total += float(value) * (b - a)
        if classify:
            wrong += int(np.count_nonzero(np.argmax(net.bk.to_host(F), axis=1) != Y[a:b]))
    return total / n, (wrong / n if classify else None)


def subset(X, Y, k, rng, autoencode):
    """A fixed random subset of k rows (all rows when k is None or too big)."""
    if k is None or k >= X.shape[0]:
        return X, Y
    idx = np.sort(rng.choice(X.shape[0], size=k, replace=False))
    Xs = X[idx]
    return Xs, (Xs if autoencode else Y[idx])
