"""Write a small image folder (train/ and val/ of class folders, PNG files) from Fashion-MNIST,
for trying `inception train FOLDER` in seconds.

    .venv/bin/python scripts/make_demo_folder.py demo-folder

reads Fashion-MNIST as `inception train` does (`inception.data.fashion_mnist`: --data-dir, then
Debian's dataset-fashion-mnist) and writes, for each of the ten classes, the first --train images
of the training set to train/CLASS/000.png, 001.png, ... and the first --val images of the test
set to val/CLASS/000.png, ...: the same files on every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from inception.data import DataError, TensorSplit, fashion_mnist

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot")


def write_split(split: TensorSplit, folder: Path, per_class: int) -> int:
    """The first `per_class` images of each class as folder/CLASS/NNN.png; how many."""
    written = 0
    for label, name in enumerate(CLASSES):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        chosen = (split.labels == label).nonzero().flatten()[:per_class]
        for k, i in enumerate(chosen.tolist()):
            Image.fromarray(split.images[i, 0].numpy()).save(target / f"{k:03d}.png")
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="demo-folder",
                        help="the folder to write (default: demo-folder)")
    parser.add_argument("--train", type=int, default=100, metavar="N",
                        help="training images per class (default 100)")
    parser.add_argument("--val", type=int, default=20, metavar="N",
                        help="validation images per class (default 20)")
    parser.add_argument("--data-dir", help="a folder with Fashion-MNIST's four IDX files")
    args = parser.parse_args(argv)
    if args.train < 1 or args.val < 1:
        parser.error("--train and --val must be at least 1")
    out = Path(args.out)
    try:
        train, test = fashion_mnist(args.data_dir, download=False)
        counts = {"train": write_split(train, out / "train", args.train),
                  "val": write_split(test, out / "val", args.val)}
    except (DataError, OSError) as e:
        print(f"make_demo_folder: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {counts['train']} training and {counts['val']} validation images, "
          f"{len(CLASSES)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
