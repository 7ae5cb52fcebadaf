import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inception import data as data_lib

# Session fixtures that train a model: every test that uses one is slow (`-m "not slow"` skips it).
TRAINING_FIXTURES = {"fashion_run", "folder_run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Two threads, as on the CI machine, so results do not depend on the host's core count."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fashion_mnist():
    """(train, test) from $INCEPTION_DATA_DIR (scripts/gpu-check.sh sets it) or Debian's
    dataset-fashion-mnist; never downloads."""
    try:
        return data_lib.fashion_mnist(os.environ.get("INCEPTION_DATA_DIR"), download=False)
    except data_lib.DataError:
        pytest.skip("dataset-fashion-mnist is not installed (CI installs it)")


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    """An IDX file of unsigned bytes, as Fashion-MNIST's are (optionally gzipped)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


@pytest.fixture(scope="session")
def small_fashion_mnist_dir(fashion_mnist, tmp_path_factory):
    """A `--data-dir` with the first 2,048 training and 512 test images of Fashion-MNIST, for
    tests that train and evaluate whole runs without paying for the 10,000 test images after
    every epoch (`--subset N` up to 2,048 picks the same training images as from the full
    set)."""
    folder = tmp_path_factory.mktemp("small-fashion-mnist")
    for (split, n), stem in zip(((fashion_mnist[0], 2048), (fashion_mnist[1], 512)),
                                ("train", "t10k"), strict=True):
        write_idx(folder / f"{stem}-images-idx3-ubyte", split.images[:n, 0].numpy())
        write_idx(folder / f"{stem}-labels-idx1-ubyte", split.labels[:n].numpy())
    return str(folder)


# Trouser, Sneaker, Bag: three Fashion-MNIST classes a small model separates quickly.
FIXTURE_CLASSES = {"trouser": 1, "sneaker": 7, "bag": 8}


def _save_mixed(array: np.ndarray, path: Path, k: int) -> Path:
    """One Fashion-MNIST image in a rotating mix of formats, modes and sizes."""
    image = Image.fromarray(array)
    side = (28, 40, 57, 33)[k % 4]
    image = image.resize((side, side + (k % 3) * 5), Image.BILINEAR)
    mode, ext = [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".png"),
                 ("I;16", ".png"), ("CMYK", ".jpg"), ("LA", ".png"), ("RGB", ".jpeg")][k % 8]
    if mode == "I;16":
        image = Image.fromarray(array.astype(np.uint16) * 257).resize(image.size)
    elif mode == "P":
        image = image.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=64)
    else:
        image = image.convert(mode)
    out = path.with_suffix(ext)
    image.save(out)
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, fashion_mnist):
    """train/ and val/ of three Fashion-MNIST classes as mixed JPEG/PNG, modes and sizes."""
    root = tmp_path_factory.mktemp("folder")
    train, test = fashion_mnist
    for split, source, per_class in (("train", train, 60), ("val", test, 20)):
        for name, label in FIXTURE_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            idx = (source.labels == label).nonzero().flatten()[:per_class]
            for k, i in enumerate(idx.tolist()):
                _save_mixed(source.images[i, 0].numpy(), folder / f"{i}", k)
    return root


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory, small_fashion_mnist_dir):
    """A briefly trained Fashion-MNIST run directory (width 0.25, 2048 images, 2 epochs,
    evaluated on 512 test images)."""
    from inception.recipes import get_recipe
    from inception.train import train

    cfg = get_recipe("fashion-mnist").replace(width=0.25, subset=2048, epochs=2, batch_size=64,
                                              workers=0)
    return train(cfg, out=tmp_path_factory.mktemp("runs") / "fashion", progress=False,
                 data_dir=small_fashion_mnist_dir, device="cpu").run_dir


@pytest.fixture(scope="session")
def fashion_model(tmp_path_factory):
    """A model directory as a Fashion-MNIST run exports it (the default recipe's model, its
    preprocessing and class names, `model.json` naming the data), with random weights (seed 0):
    for tests that need a loadable model, not a trained one."""
    from inception import data as data_lib
    from inception.model import GoogLeNet
    from inception.preprocessing import Preprocessing
    from inception.recipes import get_recipe
    from inception.weights import save_model

    config = get_recipe("fashion-mnist").model.replace(aux_logits=False)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fashion-model")
    preprocessing = Preprocessing(image_size=28, resize=28, crop=28,
                                  mean=data_lib.FASHION_MNIST_MEAN,
                                  std=data_lib.FASHION_MNIST_STD, channels=1)
    save_model(folder, config, GoogLeNet(config).state_dict(), preprocessing,
               list(data_lib.FASHION_MNIST_CLASSES),
               {"recipe": "fashion-mnist", "data": "fashion-mnist"})
    return folder


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory, image_folder):
    """A briefly trained run on the mixed image-folder fixture (3 classes, RGB, 32 px)."""
    from inception.recipes import get_recipe
    from inception.train import train

    cfg = get_recipe("fashion-mnist").replace(width=0.25, epochs=2, batch_size=16, workers=0,
                                              augment="folder", in_chans=3, image_size=32)
    return train(cfg, str(image_folder), out=tmp_path_factory.mktemp("runs") / "folder",
                 progress=False, device="cpu").run_dir
