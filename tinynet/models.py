"""Named benchmark architectures. Registry: `MODELS` (name -> builder).

Each builder takes (dtype, seed, device, **options) and returns a Sequential,
plus the name of the dataset it trains on (`DATASET[name]`). The options each
model takes (`MODEL_OPTIONS[name]`: option -> allowed values) are checked by
`build_model`, so an option given to a model that has no such choice is a
clear error rather than silently ignored."""
import inspect

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


def cifar_mlp(dtype=np.float32, seed=0, device="cpu", batchnorm=None, **kw):
    """Thesis 4.1.2: 3072 inputs, 8 hidden ReLU layers of 100, 10 classes,
    softmax cross-entropy."""
    return mlp([3072] + [100] * 8 + [10], "relu", SoftmaxCrossEntropyLoss(), batchnorm=batchnorm,
               dtype=dtype, seed=seed, device=device, **kw)


def mnist_mlp(dtype=np.float32, seed=0, device="cpu", batchnorm=None, **kw):
    """Small classifier for demos: 784-100-10, tanh, softmax cross-entropy."""
    return mlp([784, 100, 10], "tanh", SoftmaxCrossEntropyLoss(), batchnorm=batchnorm,
               dtype=dtype, seed=seed, device=device, **kw)


def tiny_mlp(dtype=np.float32, seed=0, device="cpu", batchnorm=None, **kw):
    """Test-sized classifier on MNIST downsampled to 7x7: 49-8-6-10, tanh.
    Small enough for dense Hessians (524 parameters)."""
    return mlp([49, 8, 6, 10], "tanh", SoftmaxCrossEntropyLoss(), batchnorm=batchnorm,
               dtype=dtype, seed=seed, device=device, **kw)


# -- convolutional nets (issue 11) ---------------------------------------------------------------
def _pool_stage(pool, k=2):
    """A k x k pooling stage (stride k) of kind "max" or "avg"."""
    from tinynet.layers import AvgPool2d, MaxPool2d     # looked up at build time
    kinds = {"max": MaxPool2d, "avg": AvgPool2d}
    if pool not in kinds:
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    return kinds[pool](k)


def cifar_cnn(dtype=np.float32, seed=0, device="cpu", batchnorm=None, pool="max", second_pool=False, **kw):
    """The CIFAR-10 CNN of seed 003 ("Divide stepsizes by sqrt(share x fanin)",
    and the whitening vs batch-norm slides): C6(5x5)-P(2x2)-C16(5x5)-F84-F16-F10
    with ReLU, input (3, 32, 32), softmax cross-entropy:

      Conv2d(3, 6, 5) -> (6, 28, 28), ReLU, Pool 2x2 -> (6, 14, 14),
      Conv2d(6, 16, 5) -> (16, 10, 10), ReLU, [Pool 2x2 -> (16, 5, 5)],
      Flatten -> 1600 [400], Linear(., 84), ReLU, Linear(84, 16), ReLU, Linear(16, 10).

    pool: "max" (default) or "avg", the kind of every pooling stage.
    second_pool: False (default, the slides as written: one pooling, 1600
    features into F84; 138,886 parameters) or True (a second 2x2 pooling after
    C16, as in LeNet-5: 400 features; 38,086 parameters). docs/errata.md gives
    the reasons for the defaults.
    batchnorm: None, or "full": BatchNorm2d after each convolution and BatchNorm
    after each hidden dense layer, before its ReLU (the slides' batch-norm
    baseline). "mean-only" has no image stage and is refused.
    Trains on "cifar10-standardized" (per-channel standardized pixels)."""
    from tinynet.layers import BatchNorm, BatchNorm2d, Conv2d, Flatten
    if batchnorm not in (None, "full"):
        raise ValueError(f"cifar-cnn: batchnorm must be 'full' or None, got {batchnorm!r}"
                         + ("; mean-only batch norm exists for vectors only (MeanOnlyBatchNorm), "
                            "tinynet has no per-channel image version of it" if batchnorm == "mean-only" else ""))
    if second_pool not in (False, True):
        raise ValueError(f"cifar-cnn: second_pool must be True or False, got {second_pool!r}")
    full = batchnorm == "full"
    layers = [Conv2d(3, 6, 5)] + ([BatchNorm2d(6)] if full else []) + [ReLU(), _pool_stage(pool)]
    layers += [Conv2d(6, 16, 5)] + ([BatchNorm2d(16)] if full else []) + [ReLU()]
    if second_pool:
        layers.append(_pool_stage(pool))
    features = 16 * 5 * 5 if second_pool else 16 * 10 * 10
    layers.append(Flatten())
    for a, b in ((features, 84), (84, 16)):
        layers += [Linear(a, b)] + ([BatchNorm(b)] if full else []) + [ReLU()]
    layers.append(Linear(16, 10))
    return Sequential(layers, SoftmaxCrossEntropyLoss(), dtype=dtype, seed=seed, device=device,
                      input_shape=(3, 32, 32), **kw)


def tiny_cnn(dtype=np.float32, seed=0, device="cpu", pool="max", **kw):
    """Test-sized CNN on MNIST downsampled to 7x7 (input (1, 7, 7)), small
    enough for dense Hessians and seed 001's matrices (216 parameters; the
    seed-001 arrays take about 83 MB (curvature.seed.dense_bytes), most of it
    B_b and D_zz, which grow with the squares of the activation sizes):

      Conv2d(1, 2, 2) -> (2, 6, 6)      10 parameters
      Tanh, Pool 2x2 -> (2, 3, 3)
      Conv2d(2, 4, 2) -> (4, 2, 2)      36 parameters
      Tanh, Flatten -> 16
      Linear(16, 10)                   170 parameters

    pool: "max" (default) or "avg". Softmax cross-entropy.
    Tanh, not ReLU, as tiny-mlp: MNIST's background is exactly 0 and the
    biases start at 0, so a ReLU would sit exactly at its kink on every
    background patch; its Hessian there would be a convention (relu'(0) = 0),
    not a derivative, and `tinynet inspect --check`'s finite differences would
    disagree with it. With tanh the max-pooling windows of background patches
    tie, but their entries are b + W 0 = b, equal under any perturbation."""
    from tinynet.layers import Conv2d, Flatten
    layers = [Conv2d(1, 2, 2), Tanh(), _pool_stage(pool), Conv2d(2, 4, 2), Tanh(), Flatten(), Linear(16, 10)]
    return Sequential(layers, SoftmaxCrossEntropyLoss(), dtype=dtype, seed=seed, device=device,
                      input_shape=(1, 7, 7), **kw)


MODELS = {
    "mnist-autoencoder": mnist_autoencoder,
    "cifar-mlp": cifar_mlp,
    "mnist-mlp": mnist_mlp,
    "tiny-mlp": tiny_mlp,
    "cifar-cnn": cifar_cnn,
    "tiny-cnn": tiny_cnn,
}

# dataset each model trains on: "mnist" (inputs = targets for the autoencoder),
# "mnist-labels", "mnist7-labels" (7x7 average-pooled MNIST), "cifar10",
# "cifar10-standardized" (per-channel standardized CIFAR-10, for the CNN)
DATASET = {
    "mnist-autoencoder": "mnist-autoencode",
    "cifar-mlp": "cifar10",
    "mnist-mlp": "mnist-labels",
    "tiny-mlp": "mnist7-labels",
    "cifar-cnn": "cifar10-standardized",
    "tiny-cnn": "mnist7-labels",
}

# architecture options of each model: option -> allowed values (the builder's
# keyword of the same name; its default is the builder's default)
_BATCHNORM = {"batchnorm": (None, "full", "mean-only")}
MODEL_OPTIONS = {
    "mnist-autoencoder": _BATCHNORM,
    "cifar-mlp": _BATCHNORM,
    "mnist-mlp": _BATCHNORM,
    "tiny-mlp": _BATCHNORM,
    "cifar-cnn": {"batchnorm": (None, "full"), "pool": ("max", "avg"), "second_pool": (False, True)},
    "tiny-cnn": {"pool": ("max", "avg")},
}
_REFUSED = {("cifar-cnn", "batchnorm", "mean-only"):
            "mean-only batch norm exists for vectors only (MeanOnlyBatchNorm); tinynet has no "
            "per-channel image version of it for the convolutions"}
OPTION_NAMES = sorted({k for opts in MODEL_OPTIONS.values() for k in opts})


def model_options(name, **given):
    """The architecture options of model `name` with the builder's defaults
    filled in and `given` checked: an option the model does not take, or a
    value it does not allow, is a ValueError naming the model and its choices."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    allowed = MODEL_OPTIONS[name]
    for k, v in given.items():
        if k not in allowed:
            takes = ", ".join(allowed) or "none"
            raise ValueError(f"model {name!r} takes no option {k!r} (its options: {takes})")
        if v not in allowed[k]:
            why = _REFUSED.get((name, k, v))
            raise ValueError(f"model {name!r}: {k} must be one of {', '.join(map(repr, allowed[k]))}, "
                             f"got {v!r}" + (f" ({why})" if why else ""))
    params = inspect.signature(MODELS[name]).parameters
    return {k: given.get(k, params[k].default) for k in allowed}


def build_model(name, **kw):
    """MODELS[name](**kw). Keywords among OPTION_NAMES are checked against
    MODEL_OPTIONS[name] (model_options); the others (dtype, seed, device, init,
    alpha) go to the builder unchecked."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    model_options(name, **{k: v for k, v in kw.items() if k in OPTION_NAMES})
    return MODELS[name](**kw)
