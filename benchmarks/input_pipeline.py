"""The per-image input pipeline at 224 px, in images/s per core, against torchvision's standard
PIL ImageFolder pipeline, side by side in one process.

    .venv/bin/python benchmarks/input_pipeline.py [--images 96] [--repeats 5] [--size 500x375]

It writes `--images` JPEGs of `--size` (default 500x375, ImageNet's typical size; smooth colour
fields plus noise, so they compress like photographs rather than like flat colour) into a
temporary image folder and reads them back, one core, no workers, through:

- torchvision's standard training pipeline: `ImageFolder` + RandomResizedCrop(224), flip,
  ToTensor, Normalize (transforms v1);
- ours, the paper's (`inception train --recipe paper`): random-sized crop with a random
  interpolation, flip, Howard's brightness/contrast/saturation and PCA lighting, normalisation;
  with reduced-size JPEG decoding (`transforms.decode_side`) and without;
- ours, `--augment folder` (resize, crop, flip);
- evaluation: torchvision's Resize(256) + CenterCrop(224) (v1), and ours (`inception eval`'s
  1-crop preprocessing), with reduced-size decoding and without.

The paths alternate for `--repeats` rounds; each one's median is reported. Compare with the
training step's rate at 224 px (`inception bench --train`, BENCHMARKS.md): with W DataLoader
workers the pipeline delivers about W times the per-core rate, on cores the step also wants.
The run's JSON record (machine, versions, commit, figures) goes to benchmarks/results/
(`_record.py`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py
from PIL import Image

from inception.data import ImageFolderDataset
from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from inception.timing import median_rates
from inception.transforms import (
    decode_side,
    eval_transform,
    folder_train_transform,
    paper_train_transform,
)


def write_images(root: Path, n: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    for i in range(n):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        field = np.stack([127 + 100 * np.sin(x / (40 + 15 * c) + y / 70 + phase[c])
                          for c in range(3)], -1)
        noisy = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)

    from torchvision import datasets
    from torchvision import transforms as T

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, args.images, width, height)
        classes = sorted(p.name for p in root.iterdir())
        standard = datasets.ImageFolder(str(root), T.Compose([
            T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        paper_tf = paper_train_transform(224, IMAGENET_MEAN, (1.0, 1.0, 1.0))
        paper = ImageFolderDataset(root, classes, paper_tf, min_side=decode_side("paper", 224))
        paper_full = ImageFolderDataset(root, classes, paper_tf)
        light = ImageFolderDataset(root, classes,
                                   folder_train_transform(224, IMAGENET_MEAN, IMAGENET_STD),
                                   min_side=decode_side("folder", 224))
        standard_eval = datasets.ImageFolder(str(root), T.Compose([
            T.Resize(256), T.CenterCrop(224), T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        eval_tf = eval_transform(224, IMAGENET_MEAN, IMAGENET_STD)
        ours_eval = ImageFolderDataset(root, classes, eval_tf, min_side=256)
        ours_eval_full = ImageFolderDataset(root, classes, eval_tf)

        def read_all(dataset):
            def run() -> None:
                for i in range(len(dataset)):
                    dataset[i]
            return run

        rates = median_rates({
            "training: torchvision ImageFolder + RandomResizedCrop (v1)": read_all(standard),
            "training: inception, paper recipe (section 6 distortions)": read_all(paper),
            "training: inception, paper recipe, full-size decoding": read_all(paper_full),
            "training: inception, --augment folder": read_all(light),
            "evaluation: torchvision Resize(256) + CenterCrop(224) (v1)": read_all(standard_eval),
            "evaluation: inception, 1 crop": read_all(ours_eval),
            "evaluation: inception, 1 crop, full-size decoding": read_all(ours_eval_full),
        }, args.images, args.repeats)
    print(f"{args.images} JPEGs of {width}x{height}, 1 core, no workers, median of "
          f"{args.repeats} alternating rounds")
    print("| pipeline | images/s per core |")
    print("|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} |")
    recorder.write({"images": args.images, "width": width, "height": height, "threads": 1,
                    "repeats": args.repeats, "images_per_s_per_core": rates})


if __name__ == "__main__":
    main()
