import numpy as np
import pytest
import torch
from conftest import write_idx as _write_idx

from inception import data as data_lib
from inception.transforms import eval_transform


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_from_data_dir(tmp_path, compress):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        suffix = ".gz" if compress else ""
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}",
                   rng.integers(0, 256, (n, 28, 28)), compress)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n),
                   compress)
    train, test = data_lib.fashion_mnist(tmp_path, download=False)
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (5,) and test.labels.dtype == torch.int64


def test_truncated_idx_is_refused_by_name(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    _write_idx(path, np.zeros((3, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(data_lib.DataError, match="truncated"):
        data_lib._read_idx(path)


def test_debian_fashion_mnist(fashion_mnist):
    train, test = fashion_mnist
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    mean = train.images.float().div(255).mean().item()
    assert abs(mean - data_lib.FASHION_MNIST_MEAN[0]) < 1e-3


def test_image_folder_reads_every_format_and_mode(image_folder):
    train_dir, _, classes = data_lib.image_folder_splits(image_folder)
    assert classes == ["bag", "sneaker", "trouser"]
    suffixes = {p.suffix for p in train_dir.rglob("*.*")}
    assert suffixes == {".png", ".jpg", ".jpeg"}
    for channels in (3, 1):
        ds = data_lib.ImageFolderDataset(train_dir, classes, eval_transform(32, (0.5,) * channels,
                                                                           (0.5,) * channels),
                                         channels)
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (channels, 32, 32) and torch.isfinite(x).all()


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "x.png")
    image = data_lib.to_8bit(Image.open(tmp_path / "x.png"))
    assert image.mode == "L"
    array = np.asarray(image)
    assert array.min() == 0 and array.max() == 255 and 120 < array.mean() < 135


def test_structural_mistakes_stop_with_one_line(tmp_path, image_folder):
    with pytest.raises(data_lib.DataError, match="no such folder"):
        data_lib.image_folder_splits(tmp_path)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(data_lib.DataError, match="with no images: cat"):
        data_lib.image_folder_splits(tmp_path)
    import shutil

    bad = tmp_path / "mismatch"
    shutil.copytree(image_folder, bad)
    shutil.rmtree(bad / "val" / "bag")
    with pytest.raises(data_lib.DataError, match="different classes"):
        data_lib.image_folder_splits(bad)


def _photo(path, width, height):
    """A smooth, photograph-like JPEG."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([127 + 100 * np.sin(x / (60 + 20 * c) + y / 90) for c in range(3)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=92)


def test_large_jpegs_decode_at_reduced_size(tmp_path):
    from PIL import Image

    big, small, png = tmp_path / "big.jpg", tmp_path / "small.jpg", tmp_path / "big.png"
    _photo(big, 1800, 1200)
    _photo(small, 400, 300)
    Image.open(big).save(png)
    # 1200 / 4 = 300 >= 256 > 1200 / 8: a quarter-size decode.
    assert data_lib.load_image(big, min_side=256).size == (450, 300)
    assert data_lib.load_image(big, min_side=600).size == (900, 600)
    assert data_lib.load_image(big, min_side=601).size == (1800, 1200)  # 1/2 would be too small
    assert data_lib.load_image(big).size == (1800, 1200)
    assert data_lib.load_image(small, min_side=256).size == (400, 300)
    assert data_lib.load_image(png, min_side=256).size == (1800, 1200)  # only JPEG has DCT scaling
    # After the pipeline's resize, the reduced decode looks like the full one.
    tf = eval_transform(224, (0.0,) * 3, (1.0,) * 3)
    full = tf(data_lib.load_image(big))
    fast = tf(data_lib.load_image(big, min_side=256))
    assert (full - fast).abs().mean() < 2 / 255


def test_image_folder_passes_min_side(tmp_path):
    (tmp_path / "a").mkdir()
    _photo(tmp_path / "a" / "1.jpg", 1800, 1200)
    folder = data_lib.ImageFolderDataset(tmp_path, ["a"], lambda image: image.size, min_side=256)
    assert folder[0] == ((450, 300), 0)
