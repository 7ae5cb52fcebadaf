"""Fine-tuning torchvision's ImageNet GoogLeNet on an image folder.

Launch (with torchvision's `googlenet-1378be20.pth`, downloaded by the user):

    inception train path/to/folder --init torchvision:googlenet-1378be20.pth

The model takes torchvision's layout (`GoogLeNetConfig.torchvision()`: BN, a 3x3 "5x5" branch,
2x2 pool before 5a) with `transform_input=True`, as torchvision's own builder sets it for these
weights (vision#4136), and ImageNet mean/std normalisation; the classifiers are new, sized to the
folder's classes. Short schedule, small learning rate: the features are already trained.

Expected result and cost: not measured (torchvision's ImageNet weights have not been run through
this recipe). The tests fine-tune from a randomly initialised torchvision model saved to a file,
which checks the plumbing, not the accuracy.
"""

from inception.config import GoogLeNetConfig
from inception.train.config import TrainConfig


def recipe() -> TrainConfig:
    return TrainConfig(
        recipe="finetune",
        epochs=10,
        batch_size=64,
        lr=0.01,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        schedule="onecycle",
        warmup_fraction=0.1,
        label_smoothing=0.1,
        averaging="none",
        augment="folder",
        precision="bf16",
        channels_last=True,
        model=GoogLeNetConfig.torchvision(transform_input=True),
    )
