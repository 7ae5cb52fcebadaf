"""The paper's training method, section 6, setting by setting.

Launch (an image folder with train/ and val/ class folders, 224 px as in the paper):

    inception train path/to/folder --recipe paper

Smoke variant (a small folder, reduced size and width):

    inception train path/to/folder --recipe paper --image-size 96 --width 0.25 --epochs 3

Expected result and cost: the paper trained on ImageNet with DistBelief for a time it does not
give; Caffe's port needed 250 epochs with this schedule (60 with a faster one). A 224 px training
step of the paper variant on a CPU is measured by `inception bench --train` (BENCHMARKS.md,
"Inference and training at 224 px"): at such rates ImageNet is out of reach of a few CPU cores,
so this recipe is for GPUs and for small folders.

What is not in the paper and comes from Caffe's `bvlc_googlenet` solver, which was made with the
first author's help: base learning rate 0.01 at batch 32, weight decay 2e-4, 250 epochs.
"""

from inception.config import GoogLeNetConfig
from inception.train.config import TrainConfig


def recipe() -> TrainConfig:
    return TrainConfig(
        recipe="paper",
        # "Our training used asynchronous stochastic gradient descent with 0.9 momentum": we run
        # synchronous SGD (one process, or DDP), the modern equivalent of DistBelief's replicas.
        momentum=0.9,
        nesterov=False,
        # "fixed learning rate schedule (decreasing the learning rate by 4% every 8 epochs)"
        schedule="step",
        lr_step_epochs=8,
        lr_step_gamma=0.96,
        lr=0.01,  # Caffe's base_lr at batch 32 (the paper gives none)
        batch_size=32,
        weight_decay=2e-4,  # Caffe's
        epochs=250,  # Caffe's README: the original solver ran 250 epochs
        # "Polyak averaging [13] was used to create the final model used at inference time."
        # [13] is Polyak & Juditsky's averaging of the iterates: a running mean, here over the
        # second half of training (the paper does not say when averaging starts).
        averaging="polyak",
        average_start=0.5,
        # "sampling of various sized patches ... between 8% and 100% of the image area ... aspect
        # ratio ... between 3/4 and 4/3", "photometric distortions by Andrew Howard", "random
        # interpolation methods (bilinear, area, nearest neighbor and cubic, with equal
        # probability)", flips and mean subtraction: `inception.transforms.paper_train_transform`.
        augment="paper",
        label_smoothing=0.0,
        precision="fp32",
        channels_last=True,
        # Table 1 and section 5 as printed: LRN, true 5x5, 3x3/2 pool, dropout 40% / 70%, aux
        # heads on 4a and 4d with their losses weighted by 0.3.
        model=GoogLeNetConfig(),
    )
