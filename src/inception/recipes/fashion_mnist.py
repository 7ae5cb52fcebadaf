"""Fast recipes for Fashion-MNIST on a CPU: GoogLeNet's topology and aux heads, modern training.

Launch (the default `inception train`):

    inception train

Expected result and cost: `benchmarks/fashion_mnist.py --runs 3` measures them (test top-1 and
wall time of whole `inception train` processes, seeds 0-2); BENCHMARKS.md, "Fashion-MNIST time
to accuracy", has the figures with the machine, versions and date of each. Smoke variant:
`inception train --subset 2048 --epochs 1`.

`long_recipe` (`inception train --recipe fashion-mnist-long`): width 0.5 for 45 epochs; it holds
out 5,000 training images for validation, but its settings were chosen on test accuracy, before
that split existed. BENCHMARKS.md, "The longer recipe", has its measured result and wall time
(`inception train --recipe fashion-mnist-long`, then `inception eval RUN --crops 10` for the
mirror view), from the recipe as it was then: all 60,000 images for training, and the aux pool
of 0.4.0 and earlier.
"""

from inception.config import GoogLeNetConfig
from inception.train.config import TrainConfig

# Fashion-MNIST is 28x28 grayscale: the small stem keeps 3a at 14x14 (see GoogLeNetConfig.stem).
FASHION_MNIST_MODEL = GoogLeNetConfig(
    num_classes=10, in_chans=1, image_size=28, stem="small",
    norm="bn",  # trains at large learning rates; the LRN variant needs far smaller ones
    width=0.25,  # a quarter of every filter count: 4x fewer channels, ~16x fewer multiply-adds
    dropout=0.2,
    # At 28 px with the small stem, 4a and 4d are 7x7: the paper's 5x5/3 pool would average only
    # the top-left 5x5 window (1x1 out) and is refused. An adaptive pool to 4x4 (torchvision's
    # aux pool) averages overlapping 2-3 px windows that cover every position, and keeps the
    # paper's 4x4 grid in front of the aux heads' 1x1 convolution and FC layer.
    aux_pool="adaptive",
)


def recipe() -> TrainConfig:
    """The fast default: 10 epochs at width 0.25 (cost and accuracy: the module docstring)."""
    return TrainConfig(
        recipe="fashion-mnist",
        model=FASHION_MNIST_MODEL,
        epochs=10,
        batch_size=256,
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="onecycle",
        warmup_fraction=0.15,
        label_smoothing=0.1,
        augment="batch",
        translate=2,
        erase_p=0.0,
        # An exponential moving average of the weights (the paper's "Polyak averaging", as
        # TensorFlow implements it) is evaluated and exported; its half-life is ~350 steps.
        averaging="ema",
        ema_decay=0.998,
        precision="bf16",
        channels_last=True,
    )


def long_recipe() -> TrainConfig:
    """Longer and wider, for the best accuracy this model reaches on Fashion-MNIST.

    The EMA's half-life (~690 steps, 3 of the 45 epochs) is shorter than with 0.9995: with that,
    the average still lagged the weights when the one-cycle learning rate had reached ~0. That
    choice, and the length, were made looking at test accuracy, before the validation split
    existed. The last 5,000 training images are now held out (`val_images`): every epoch is
    evaluated on them and any further tuning is done there; the test set is evaluated once, at
    the end.
    """
    return recipe().replace(recipe="fashion-mnist-long", width=0.5, epochs=45, erase_p=0.5,
                            ema_decay=0.999, val_images=5000)
