"""Data sources: the built-in Fashion-MNIST and any image folder.

Fashion-MNIST is read from the IDX files of Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist`) or from `--data-dir`; where neither has them, torchvision's
downloader fetches them. It is held as one uint8 tensor and augmented batch-wise
(`inception.transforms.BatchAugment`), so an epoch costs no per-image Python.

An image folder has `train/` and `val/` subfolders of class folders (torchvision's ImageFolder
layout). Images are decoded with PIL through torchvision, converted to RGB (or L for a
one-channel model) whatever their mode (grayscale, RGBA, palette, CMYK), and transformed per image
in DataLoader workers.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The training set's per-pixel mean and std, for [0, 1] inputs.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


class DataError(ValueError):
    """A data set that cannot be used; the message names the path and what to do."""


@dataclass
class TensorSplit:
    """A whole split in memory: images N x C x H x W uint8, labels N int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> TensorSplit:
        return self if n is None else TensorSplit(self.images[:n], self.labels[:n])

    def hold_out(self, n: int) -> tuple[TensorSplit, TensorSplit]:
        """(all but the last `n` images, the last `n`): a fixed validation split."""
        k = len(self) - n
        return (TensorSplit(self.images[:k], self.labels[:k]),
                TensorSplit(self.images[k:], self.labels[k:]))


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array: magic 0x0000 08 NDIM, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: truncated or corrupt IDX file ({len(data)} bytes, expected "
                        f"{expected}); delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        for candidate in (folder / name, folder / "raw" / name,
                          folder / "FashionMNIST" / "raw" / name):
            if candidate.exists():
                return candidate
    return None


def fashion_mnist(data_dir: str | Path | None = None, download: bool = True,
                  ) -> tuple[TensorSplit, TensorSplit]:
    """(train, test) Fashion-MNIST as uint8 tensors of shape N x 1 x 28 x 28.

    Looks in `data_dir` (if given), then Debian's package; downloads with torchvision into
    `data_dir` (default `~/.cache/inception/fashion-mnist`) only if neither has the files.
    """
    folders = [Path(data_dir)] if data_dir else []
    folders.append(DEBIAN_FASHION_MNIST)
    for folder in folders:
        files = {split: [_find_idx(folder, s) for s in stems]
                 for split, stems in FASHION_MNIST_FILES.items()}
        if all(p is not None for paths in files.values() for p in paths):
            log.debug("Fashion-MNIST from %s", folder)
            return tuple(_split(*files[s]) for s in ("train", "test"))  # type: ignore[return-value]
    if not download:
        raise DataError(f"Fashion-MNIST not found in {', '.join(map(str, folders))}; install "
                        "dataset-fashion-mnist or pass --data-dir")
    target = Path(data_dir) if data_dir else Path.home() / ".cache" / "inception" / "fashion-mnist"
    log.info("Fashion-MNIST not found locally; downloading with torchvision into %s", target)
    from torchvision.datasets import FashionMNIST

    try:
        for train in (True, False):
            FashionMNIST(str(target), train=train, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"Fashion-MNIST is not installed and could not be downloaded into "
                        f"{target} ({e}); install dataset-fashion-mnist or pass --data-dir") from e
    return fashion_mnist(target, download=False)


def _split(images: Path, labels: Path) -> TensorSplit:
    x = torch.from_numpy(_read_idx(images).copy()).unsqueeze(1)
    y = torch.from_numpy(_read_idx(labels).astype(np.int64))
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return TensorSplit(x, y)


class LabelledImages(Dataset):
    """uint8 C x H x W images with their labels, from an in-memory split (`images`, `labels`, on
    any device) or an image folder (`folder`, a dataset of (image, label) or `Skipped`): what
    every evaluation (training's per-epoch one, `inception eval`, export's checks) cuts its
    crops from."""

    def __init__(self, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 folder: Dataset | None = None) -> None:
        self.images, self.labels, self.folder = images, labels, folder

    @classmethod
    def from_split(cls, split: TensorSplit, channels: int = 1) -> LabelledImages:
        """An in-memory split, its one channel repeated for a `channels`-channel model."""
        images = split.images if channels == split.images.shape[1] else \
            split.images.expand(-1, channels, -1, -1)
        return cls(images, split.labels)

    @classmethod
    def from_folder(cls, root: Path, classes: list[str], channels: int, min_side: int,
                    labels: Sequence[int] | None = None) -> LabelledImages:
        """The images of `root`/CLASS/ folders, decoded (`load_image`: RGB, or L for one
        channel) with a shorter side of at least `min_side`, as uint8 tensors; `labels` as in
        `ImageFolderDataset`."""
        from torchvision.transforms import v2

        return cls(folder=ImageFolderDataset(root, classes, v2.PILToTensor(), channels,
                                             min_side=min_side, labels=labels))

    def subset(self, n: int | None) -> LabelledImages:
        """The first `n` images (all of them for None)."""
        return self.part(0, n if n is not None else len(self))

    def shard(self, rank: int, world: int) -> LabelledImages:
        """Process `rank`'s contiguous share of `world` (sizes differing by one at most)."""
        bounds = torch.arange(len(self)).tensor_split(world)[rank]
        start = int(bounds[0]) if len(bounds) else len(self)
        return self.part(start, start + len(bounds))

    def part(self, start: int, stop: int) -> LabelledImages:
        """Images `start` to `stop` (exclusive)."""
        stop = min(stop, len(self))
        if self.folder is not None:
            return LabelledImages(folder=torch.utils.data.Subset(self.folder,
                                                                 range(start, stop)))
        return LabelledImages(self.images[start:stop], self.labels[start:stop])

    def __len__(self) -> int:
        return len(self.folder) if self.folder is not None else len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | Skipped:
        if self.folder is not None:
            return self.folder[i]
        return self.images[i], int(self.labels[i])


class TensorImageDataset(Dataset):
    """An in-memory uint8 split served as PIL images, for the per-image pipelines."""

    def __init__(self, split: TensorSplit, transform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        from PIL import Image

        array = self.split.images[i].permute(1, 2, 0).squeeze(-1).numpy()
        return self.transform(Image.fromarray(array)), int(self.split.labels[i])


# -- image folders --------------------------------------------------------------------------------

def recorded_path(data: str | Path) -> str:
    """`data` as a run records it (`config.json`, `model.json`, `results.json`): "fashion-mnist",
    or the folder's absolute path, so that the run directory works from any working directory
    and wherever it is moved while the data stays put (`resolve_recorded_path` reads it back)."""
    data = str(data)
    return data if data == "fashion-mnist" else os.path.abspath(data)


def resolve_recorded_path(recorded: str, run_dir: Path, source: str, give: str) -> str:
    """The folder a run directory's recorded data path `recorded` names, from here.

    An absolute path that exists is used as it is; a relative one (run directories written
    before paths were recorded absolute) is tried from the working directory. Failing that, the
    path (for an absolute one: its last part) is looked for in `run_dir` and each folder above
    it: a project moved or copied whole, its runs beside or below its data, still finds it.
    Nothing found is a `DataError` naming `source` (the file that records the path) and `give`,
    what to pass instead."""
    if recorded == "fashion-mnist":
        return recorded
    path = Path(recorded)
    if path.is_dir():
        return recorded
    tail = Path(path.name) if path.is_absolute() else path
    for folder in (Path(os.path.abspath(run_dir)), *Path(os.path.abspath(run_dir)).parents):
        candidate = folder / tail
        if candidate.is_dir():
            log.info("DATA %s (recorded in %s) is not there from here; using %s", recorded,
                     source, candidate)
            return str(candidate)
    raise DataError(f"DATA {recorded} (recorded in {source}) is not found from here, nor in "
                    f"{run_dir} or any folder above it; {give}")


def class_folder_names(root: Path) -> list[str]:
    """The names of `root`'s class folders (its visible subfolders), sorted, unchecked."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def folder_classes(root: Path) -> list[str]:
    """The class folders of `root`, sorted, after checking that each holds at least one image."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; an image folder needs train/ and val/ "
                        "subfolders of class folders")
    classes = class_folder_names(root)
    if not classes:
        raise DataError(f"{root}: no class folders; put each class's images in {root}/CLASS/")
    empty = [c for c in classes if not any(
        p.suffix.lower() in IMAGE_EXTENSIONS for p in (root / c).rglob("*") if p.is_file())]
    if empty:
        raise DataError(f"{root}: class folder(s) with no images: {', '.join(empty)}; add images "
                        "or remove the folder")
    return classes


def image_folder_splits(root: str | Path) -> tuple[Path, Path, list[str]]:
    """(train dir, val dir, class names) of an ImageFolder-layout data set, checked."""
    root = Path(root)
    train, val = root / "train", root / "val"
    classes = folder_classes(train)
    val_classes = folder_classes(val)
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        raise DataError(f"{root}: train/ and val/ have different classes (only in train: "
                        f"{only_train or '-'}; only in val: {only_val or '-'}); make them match")
    return train, val, classes


def to_8bit(image):
    """16- and 32-bit integer images (16-bit PNGs load as "I;16" or "I") scaled to 8 bits: PIL's
    own conversion would clip every value above 255 to white."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        from PIL import Image

        array = np.asarray(image).astype(np.int64)
        return Image.fromarray(np.clip(array >> 8, 0, 255).astype(np.uint8), mode="L")
    return image


@dataclass(frozen=True)
class Skipped:
    """What a dataset returns instead of a sample whose file cannot be decoded."""

    path: str
    reason: str


def collate_skipping(batch: list) -> tuple[Any, list[Skipped]]:
    """`default_collate` of the good samples (None if there are none), and the skipped ones."""
    from torch.utils.data import default_collate

    good = [b for b in batch if not isinstance(b, Skipped)]
    return (default_collate(good) if good else None), [b for b in batch if isinstance(b, Skipped)]


class ImageFolderDataset(Dataset):
    """torchvision's ImageFolder with the image mode fixed: RGB, or L for one-channel models.

    A file that cannot be decoded (corrupt, truncated, empty, not an image) comes back as a
    `Skipped` naming it, so that one bad file never stops an epoch; `collate_skipping` drops it
    from its batch and the training loop logs and lists it in the run directory.

    `min_side` lets large JPEGs decode at reduced size (`load_image`). `labels` gives each class
    folder's label when it is not the folder's index (a model whose classes are more than the
    folder's, such as ImageNet weights evaluated on a few of its classes).
    """

    def __init__(self, root: Path, classes: list[str], transform, channels: int = 3,
                 min_side: int | None = None, labels: Sequence[int] | None = None) -> None:
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(root), loader=str,
                                  is_valid_file=lambda p: p.lower().endswith(IMAGE_EXTENSIONS))
        if self.folder.classes != classes:
            raise DataError(f"{root}: classes {self.folder.classes} differ from {classes}")
        self.mode = "L" if channels == 1 else "RGB"
        self.transform, self.min_side = transform, min_side
        self.labels = list(labels) if labels is not None else list(range(len(classes)))

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        path, label = self.folder.samples[index]
        try:
            image = load_image(path, self.mode, self.min_side)
        except ImageError as e:
            return Skipped(path, str(e))
        return self.transform(image), self.labels[label]


class ImageError(ValueError):
    """A file that does not decode to an image; the message names it and says why."""


def _open(path: str, min_side: int | None = None):
    from PIL import Image, ImageOps

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            if min_side and image.format == "JPEG":
                _draft(image, min_side)
            image = ImageOps.exif_transpose(image)
            image.load()
    except FileNotFoundError as e:
        raise ImageError(f"{path}: no such file") from e
    except Image.UnidentifiedImageError as e:  # its message repeats the file object's repr
        raise ImageError(f"{path}: not an image (cannot identify image file)") from e
    except OSError as e:
        # open()'s own errors (a folder, no permission) carry the path again: strerror alone.
        why = f"cannot read it ({e.strerror})" if e.filename else _decode_error(e)
        raise ImageError(f"{path}: {why}") from e
    except (ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # PIL's errors for corrupt, truncated, empty and non-image files are all of these kinds.
        raise ImageError(f"{path}: {_decode_error(e)}") from e
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{path}: an empty image ({image.width}x{image.height})")
    return image


def _decode_error(e: BaseException) -> str:
    """The reason a file did not decode, once: PIL's message, or the error's kind without one."""
    return f"not a decodable image ({str(e) or type(e).__name__})"


def _draft(image, min_side: int) -> None:
    """Let libjpeg decode `image` at 1/2, 1/4 or 1/8 scale (DCT scaling, PIL's `draft`) where the
    shorter side stays at least `min_side`: far less work for large photographs."""
    w, h = image.size
    short = min(w, h)
    if short >= 2 * min_side:
        image.draft(None, (math.ceil(w * min_side / short), math.ceil(h * min_side / short)))


def load_image(path: str | Path, mode: str = "RGB", min_side: int | None = None):
    """A PIL image in `mode` ("RGB" or "L") from any file PIL reads: EXIF orientation applied,
    16-bit scaled to 8 bits, transparency composited onto white (not black), CMYK and palette
    converted. Raises `ImageError` (and nothing else) for a file that does not decode.

    With `min_side`, a JPEG whose shorter side is at least twice that is decoded at reduced size
    (1/2, 1/4 or 1/8), its shorter side still at least `min_side`: pass the largest shorter side
    the pipeline resizes to."""
    image = _open(str(path), min_side)
    try:
        return convert_image(image, mode)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot convert its {image.mode} pixels ({e})") from e


def convert_image(image, mode: str = "RGB"):
    """A decoded PIL image in `mode` ("RGB" or "L") as `load_image` gives a file's: 16-bit
    scaled to 8 bits, transparency composited onto white, CMYK and palette converted."""
    return _convert(to_8bit(image), mode)


def _convert(image, mode: str):
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        from PIL import Image

        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)
