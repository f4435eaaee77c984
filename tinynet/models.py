"""Named benchmark architectures. Registry: `MODELS` (name -> builder).

Each builder takes (dtype, seed, device, **options) and returns a Sequential,
plus the name of the dataset it trains on (`DATASET[name]`)."""
import numpy as np

from tinynet.layers import Identity, Linear, ReLU, Sigmoid, Tanh
from tinynet.losses import MSELoss, SoftmaxCrossEntropyLoss
from tinynet.network import Sequential


def _norm_stage(batchnorm, d):
    """Batch-norm stage after a hidden Linear layer (issue 6): None, "full" or "mean-only"."""
    from tinynet.layers.batchnorm import BatchNorm, MeanOnlyBatchNorm
    kinds = {"full": BatchNorm, "mean-only": MeanOnlyBatchNorm}
    if batchnorm not in kinds:
        raise ValueError(f"batchnorm must be 'full', 'mean-only' or None, got {batchnorm!r}")
    return kinds[batchnorm](d)


def mlp(sizes, activation, loss, out_activation=None, batchnorm=None, **kw):
    """Linear layers of the given sizes with `activation` stages between them
    and an optional output activation; `batchnorm` ("full" / "mean-only") puts a
    batch-norm stage after each hidden Linear layer, before its activation."""
    acts = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity}
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if batchnorm is not None:
                layers.append(_norm_stage(batchnorm, sizes[i + 1]))
            layers.append(acts[activation]())
    if out_activation is not None:
        layers.append(acts[out_activation]())
    return Sequential(layers, loss, **kw)


def mnist_autoencoder(dtype=np.float32, seed=0, device="cpu", batchnorm=None, **kw):
    """Thesis 4.1.1: 784-1000-500-250-30-250-500-1000-784, logistic hidden units,
    a linear 30-unit code layer, logistic output, squared error."""
    sizes = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    layers = []
    for i in range(8):
        layers.append(Linear(sizes[i], sizes[i + 1]))
        if batchnorm is not None and i < 7:            # hidden layers only (issue 6)
            layers.append(_norm_stage(batchnorm, sizes[i + 1]))
        layers.append(Identity() if sizes[i + 1] == 30 else Sigmoid())
    return Sequential(layers, MSELoss(), dtype=dtype, seed=seed, device=device, **kw)


def cifar_mlp(dtype=np.float32, seed=0, device="cpu", **kw):
    """Thesis 4.1.2: 3072 inputs, 8 hidden ReLU layers of 100, 10 classes,
    softmax cross-entropy."""
    return mlp([3072] + [100] * 8 + [10], "relu", SoftmaxCrossEntropyLoss(),
               dtype=dtype, seed=seed, device=device, **kw)


def mnist_mlp(dtype=np.float32, seed=0, device="cpu", **kw):
    """Small classifier for demos: 784-100-10, tanh, softmax cross-entropy."""
    return mlp([784, 100, 10], "tanh", SoftmaxCrossEntropyLoss(),
               dtype=dtype, seed=seed, device=device, **kw)


def tiny_mlp(dtype=np.float32, seed=0, device="cpu", **kw):
    """Test-sized classifier on MNIST downsampled to 7x7: 49-8-6-10, tanh.
    Small enough for dense Hessians (524 parameters)."""
    return mlp([49, 8, 6, 10], "tanh", SoftmaxCrossEntropyLoss(),
               dtype=dtype, seed=seed, device=device, **kw)


MODELS = {
    "mnist-autoencoder": mnist_autoencoder,
    "cifar-mlp": cifar_mlp,
    "mnist-mlp": mnist_mlp,
    "tiny-mlp": tiny_mlp,
}

# dataset each model trains on: "mnist" (inputs = targets for the autoencoder),
# "mnist-labels", "mnist7-labels" (7x7 average-pooled MNIST), "cifar10"
DATASET = {
    "mnist-autoencoder": "mnist-autoencode",
    "cifar-mlp": "cifar10",
    "mnist-mlp": "mnist-labels",
    "tiny-mlp": "mnist7-labels",
}


def build_model(name, **kw):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kw)
