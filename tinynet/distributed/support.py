"""Which runs can go data-parallel.

An optimizer class declares `distributable = True` when every batch statistic
it uses is reduced across `net.comm` (tinynet.optim: SGD and its variants,
RMSProp, Adam through the network's gradient; KFAC, ACP and UBP through their
own reductions). Stages whose output mixes the rows of a batch must reduce their
batch statistics inside the forward pass (`reduces_batch`: BatchNorm,
MeanOnlyBatchNorm and BatchNorm2d do); the others (the eigendecomposition
layers) are refused here rather than trained on per-rank statistics that one
process would never compute.
"""


def supported():
    from tinynet.optim import OPTIMIZERS
    return sorted(name for name, cls in OPTIMIZERS.items() if getattr(cls, "distributable", False))


def check_distributable(net, optimizer, comm, batch_size):
    """Raise ValueError, saying why and what to do, unless this network and
    optimizer give one process's updates when run on comm's ranks."""
    if comm.size == 1:
        return
    if not getattr(type(optimizer), "distributable", False):
        raise ValueError(f"--distributed mpi: optimizer {optimizer.name!r} does not reduce its curvature "
                         f"statistics across ranks yet; supported: {', '.join(supported())}")
    mixing = [f"stage {i} ({s!r})" for i, s in enumerate(net.layers)
              if getattr(s, "mixes_batch", False) and not getattr(s, "reduces_batch", False)]
    if mixing:
        raise ValueError(f"--distributed mpi: {', '.join(mixing)} mixes the rows of a batch; its batch "
                         f"statistics are not reduced across ranks yet: train this model in one process")
    if batch_size % comm.size:
        raise ValueError(f"--distributed mpi: --batch-size {batch_size} does not divide over {comm.size} "
                         f"ranks; choose a multiple of {comm.size}")
