"""The training data as batches: epoch n's batches from any batch on, reproducibly.

Randomness is derived from (seed, epoch): every epoch builds its own shuffling/augmentation
generator, so a run resumed at an epoch boundary, or mid-epoch with the generator's saved state,
sees exactly the batches and augmentations of an uninterrupted one. Two pipelines:

- in-memory data sets (Fashion-MNIST): one uint8 tensor, shuffled and augmented batch-wise
  (`BatchAugment`), on the training device: no per-image Python, no per-batch transfer;
- image folders: per-image transforms in DataLoader workers, each sample seeded by (seed, epoch,
  index) whichever worker loads it.

The splits evaluated (`EvalSplit`) are uint8 images and labels, named for what they are ("val"
or "test"), which training's validation feeds to the model through the run's `Preprocessing`
exactly as `inception eval` does (`inception.evaluation`). Every pipeline normalises through
`inception.preprocessing`'s `to_unit` and `standardize`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from inception import data as data_lib
from inception import distributed
from inception.config import ConfigError
from inception.devices import to_device
from inception.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    standardize,
    to_unit,
)
from inception.train.config import RunError, TrainConfig
from inception.transforms import (
    BatchAugment,
    decode_side,
    folder_train_transform,
    paper_train_transform,
)

log = logging.getLogger(__name__)


class Epoch(NamedTuple):
    """One epoch's batches from some batch on, and the generator (if any) whose state after the
    last batch taken is what a mid-epoch checkpoint must save to continue it exactly."""

    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    generator: torch.Generator | None


@dataclass
class Batches:
    """A re-iterable source of (images, labels) batches: `epoch(n, start, state)` gives epoch n
    from batch `start`, with the batch generator's saved `state` when resuming mid-epoch.
    `skipped` collects the files that could not be decoded ({path: reason})."""

    make: Callable[[int, int, torch.Tensor | None], Epoch]
    num_images: int
    num_batches: int
    skipped: dict[str, str] = field(default_factory=dict)
    left_out: int = 0  # images past the last full batch: shuffled anew, left out each epoch

    def epoch(self, n: int, start: int = 0, state: torch.Tensor | None = None) -> Epoch:
        return self.make(n, start, state)

    def per_epoch(self) -> dict[str, int]:
        """`results.json`'s record of the images each epoch trains on and leaves out."""
        return {"images_per_epoch": self.num_images - self.left_out,
                "left_out_per_epoch": self.left_out}

    def check(self, batch_size: int, say: bool = True) -> None:
        """Refuse a `batch_size` larger than the training set (`RunError`, saying what to pass);
        with `say`, log how many images each epoch leaves out and why, when it leaves any."""
        n = self.num_images
        if n < batch_size:
            raise RunError(f"--batch-size {batch_size} is larger than the {n} training images; "
                           f"pass --batch-size {n} or less")
        if say and self.left_out:
            log.info("each epoch trains on %d of the %d training images, in whole batches of "
                     "%d: the %d that its shuffle puts last (different ones each epoch) are "
                     "left out; a --batch-size that divides %d uses them all",
                     n - self.left_out, n, batch_size, self.left_out, n)


@dataclass
class EvalSplit:
    """A split that training evaluates: its `name` ("val": held out for tuning, or "test"), its
    uint8 `images` with labels (in memory, on the training device, or an image folder), and the
    files of it that could not be decoded ({path: reason})."""

    name: str
    images: data_lib.LabelledImages
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.images)


@dataclass
class Data:
    """A run's data: training batches, the split evaluated after every epoch (`every_epoch`:
    the held-out validation split, or the test set when none is held out), the test set
    evaluated once at the end when `every_epoch` is a held-out split (else None), the class
    names, and the preprocessing the model is evaluated and exported with (`model.json`)."""

    train: Batches
    every_epoch: EvalSplit
    classes: list[str]
    preprocessing: Preprocessing
    test: EvalSplit | None = None


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 batch -> [0, 1], resized to size x size when stored at another size, standardised."""
    x = to_unit(x)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return standardize(x, mean, std)


def tensor_batches(split: data_lib.TensorSplit, batch_size: int, cfg: TrainConfig,
                   mean: tuple[float, ...], std: tuple[float, ...], train: bool,
                   ctx: distributed.Context = distributed.SINGLE,
                   device: torch.device | None = None) -> Batches:
    """An in-memory split, shuffled and augmented batch-wise by one generator per epoch (with
    `train`; without, in order and unaugmented). Under DDP every rank draws the whole global
    batch's augmentation (so the random stream does not depend on the world size) and keeps its
    slice. Training takes whole batches only: the `n % batch_size` images that the epoch's
    shuffle puts last are left out of it (`Batches.left_out`).

    On a GPU the uint8 images are copied there once and augmented and normalised there: no
    per-batch host work or transfer (for Fashion-MNIST, 47 MB)."""
    augment = BatchAugment(cfg.translate, flip=True, erase_p=cfg.erase_p) if train else None
    device = device or torch.device("cpu")
    if device.type != "cpu":
        split = data_lib.TensorSplit(split.images.to(device), split.labels.to(device))
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    n = len(split)
    drop_last = train and n >= batch_size

    def make(epoch: int, start: int, state: torch.Tensor | None) -> Epoch:
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        if state is not None:
            g.set_state(state)
        stop = n - n % batch_size if drop_last else n
        on_device = to_device(order, device)  # one copy per epoch, none per batch

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(start * batch_size, stop, batch_size):
                idx = on_device[i:i + batch_size]
                # This rank's positions in the batch (the same split as `distributed.shard`).
                mine = (torch.arange(len(idx), device=device).tensor_split(ctx.world)[ctx.rank]
                        if ctx.active else slice(None))
                if augment is not None:
                    x = augment(split.images[idx], g)[mine]
                else:
                    x = split.images[idx[mine]]
                yield _normalize(x, m, s, cfg.model.image_size), split.labels[idx[mine]]

        return Epoch(batches(), g)

    batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    return Batches(make, n, batches, left_out=n % batch_size if drop_last else 0)


class _SeededSamples(Dataset):
    """Each sample's random transform seeded by (run seed, epoch, index), whichever worker
    loads it and whenever: an epoch resumed mid-way sees the same augmentations."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(self.seed, self.epoch) + 7 * i + 3)
            return self.dataset[i]


def loader_batches(dataset: Dataset, batch_size: int, cfg: TrainConfig, train: bool,
                   pin: bool, ctx: distributed.Context = distributed.SINGLE) -> Batches:
    """Per-image pipelines in DataLoader workers. Undecodable files are dropped from their batch
    (a batch may come out a few images short), logged once each and kept in `skipped`. Under
    DDP each rank reads only its slice of every global batch. Training takes whole batches
    only, as `tensor_batches` does (`Batches.left_out`)."""
    n = len(dataset)
    drop_last = train and n >= batch_size
    seeded = _SeededSamples(dataset, cfg.seed)

    def make(epoch: int, start: int, state: torch.Tensor | None) -> Epoch:
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=g) if train else torch.arange(n)
        seeded.epoch = epoch
        stop = n - n % batch_size if drop_last else n
        remaining = distributed.shard(ctx, order[start * batch_size:stop], batch_size).tolist()
        per_rank = max(1, batch_size // ctx.world)
        # The loader's own generator: without one, DataLoader draws its workers' base seed from
        # the global generator as the epoch starts, so a run resumed mid-epoch (whose global
        # generator is restored to the checkpoint's moment) drew different dropout masks.
        loader = DataLoader(seeded, batch_size=per_rank, sampler=remaining,
                            drop_last=False, num_workers=cfg.workers, pin_memory=pin,
                            persistent_workers=False, collate_fn=data_lib.collate_skipping,
                            generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for batch, skipped in loader:
                for s in skipped:
                    if s.path not in result.skipped:
                        log.warning("skipping %s", s.reason)
                        result.skipped[s.path] = s.reason
                if batch is not None:
                    yield batch

        return Epoch(batches(), None)

    batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    result = Batches(make, n, batches, left_out=n % batch_size if drop_last else 0)
    return result


def _train_transform(cfg: TrainConfig, mean: tuple[float, ...], std: tuple[float, ...]):
    """The per-image training pipeline: section 6's ("paper") or the light one ("folder")."""
    size = cfg.model.image_size
    if cfg.augment == "paper":
        return paper_train_transform(size, mean, std)
    return folder_train_transform(size, mean, std)


def load_data(cfg: TrainConfig, data: str, data_dir: str | None, device: torch.device,
              ctx: distributed.Context = distributed.SINGLE) -> Data:
    """The training and evaluation batches for `data` ("fashion-mnist" or a folder); under DDP,
    this rank's share of each."""
    if data == "fashion-mnist":
        return _fashion_mnist_data(cfg, data_dir, device, ctx)
    return _folder_data(cfg, data, device, ctx)


def _fashion_mnist_data(cfg: TrainConfig, data_dir: str | None, device: torch.device,
                        ctx: distributed.Context) -> Data:
    """Fashion-MNIST in memory; with `cfg.val_images`, the last images of the training set are
    the split evaluated every epoch and the test set is kept for the end."""
    train, test = data_lib.fashion_mnist(data_dir)
    held_out = None
    if cfg.val_images:
        if cfg.val_images >= len(train):
            raise ConfigError(f"--val-images {cfg.val_images}: the training set has only "
                              f"{len(train)} images")
        train, held_out = train.hold_out(cfg.val_images)
    train = train.subset(cfg.subset)
    if cfg.model.in_chans != 1:
        raise ConfigError("Fashion-MNIST is grayscale: use --in-chans 1")
    mean, std = data_lib.FASHION_MNIST_MEAN, data_lib.FASHION_MNIST_STD
    if cfg.augment == "paper":
        std = (1.0,)  # "mean subtraction"
    if cfg.augment == "batch":
        train_batches = tensor_batches(train, cfg.batch_size, cfg, mean, std, True, ctx, device)
    else:
        images = data_lib.TensorImageDataset(train, _train_transform(cfg, mean, std))
        train_batches = loader_batches(images, cfg.batch_size, cfg, True, device.type == "cuda",
                                       ctx)

    def evaluated(name: str, split: data_lib.TensorSplit) -> EvalSplit:
        # On the training device once: evaluation crops and normalises whole batches there.
        on_device = data_lib.TensorSplit(split.images.to(device), split.labels.to(device))
        return EvalSplit(name, data_lib.LabelledImages.from_split(on_device))

    size = cfg.model.image_size
    preprocessing = Preprocessing(image_size=size, resize=size, crop=size, mean=mean, std=std,
                                  channels=1)
    classes = list(data_lib.FASHION_MNIST_CLASSES)
    if held_out is not None:
        return Data(train_batches, evaluated("val", held_out), classes, preprocessing,
                    test=evaluated("test", test))
    return Data(train_batches, evaluated("test", test), classes, preprocessing)


def _folder_data(cfg: TrainConfig, data: str, device: torch.device,
                 ctx: distributed.Context) -> Data:
    """An image folder's train/ (decoded and transformed in DataLoader workers) and val/ (the
    split evaluated every epoch, decoded as `inception eval` decodes it)."""
    train_dir, val_dir, classes = data_lib.image_folder_splits(data)
    channels, size, pin = cfg.model.in_chans, cfg.model.image_size, device.type == "cuda"
    mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    std = (1.0,) * channels if cfg.augment == "paper" else (
        IMAGENET_STD if channels == 3 else (0.25,) * channels)
    if cfg.augment == "batch":
        raise ConfigError("--augment batch needs an in-memory data set; use --augment folder or "
                          "paper for an image folder")
    if cfg.val_images:
        raise ConfigError("--val-images holds out part of an in-memory training set; an image "
                          "folder's val/ is its validation split already")
    train_set = data_lib.ImageFolderDataset(train_dir, classes, _train_transform(cfg, mean, std),
                                            channels, decode_side(cfg.augment, size))
    if cfg.subset is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(cfg.subset, len(train_set))))
    preprocessing = Preprocessing.centre_crop(size, mean, std)
    val = data_lib.LabelledImages.from_folder(val_dir, classes, channels,
                                              preprocessing.decode_side(1))
    return Data(loader_batches(train_set, cfg.batch_size, cfg, True, pin, ctx),
                EvalSplit("val", val), classes, preprocessing)
