"""ONNX Runtime fp32 vs static INT8 (and PyTorch fp32 channels_last), side by side in one process.

    .venv/bin/python benchmarks/onnx_int8.py RUN_DIR [--threads 2] [--batch-sizes 32 256]
    .venv/bin/python benchmarks/onnx_int8.py RUN_DIR --paper      # also the 224 px paper variant

For the trained model in RUN_DIR: `export_onnx` writes fp32 and INT8 files exactly as `inception
export` does (INT8: QDQ, per-channel, calibrated on 512 training images), reports top-1 of both on
the whole evaluation split, and this script times the three paths at each batch size, alternating
them for `--repeats` rounds and reporting medians. `--paper` adds the paper's network at 224 px
(LRN, true 5x5, 1000 classes; random weights, so speed only), calibrated on 64 Fashion-MNIST
images upsampled to 224 px RGB. The run's JSON record (machine, versions, commit, figures)
goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from _record import Recorder, add_json_out_argument  # this folder's _record.py

import inception
from inception import export
from inception.data import fashion_mnist
from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from inception.timing import median_rates


def time_paths(loaded: inception.LoadedModel, fp32: Path, int8: Path, x: torch.Tensor,
               repeats: int) -> dict[str, float]:
    s32, s8 = export.onnx_session(fp32), export.onnx_session(int8)
    xn, xc = x.numpy(), x.contiguous(memory_format=torch.channels_last)

    def torch_fp32() -> None:
        with torch.no_grad():
            loaded.model(xc)

    return median_rates({
        "torch fp32 CL": torch_fp32,
        "ORT fp32": lambda: s32.run(None, {export.INPUT_NAME: xn}),
        "ORT int8": lambda: s8.run(None, {export.INPUT_NAME: xn}),
    }, len(x), repeats)


def row(name: str, batch: int, speed: dict[str, float]) -> str:
    return (f"| {name} | {batch} | {speed['torch fp32 CL']:.0f} | {speed['ORT fp32']:.0f} | "
            f"{speed['ORT int8']:.0f} | {speed['ORT int8'] / speed['ORT fp32']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory of `inception train`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--paper", action="store_true", help="also the 224 px paper variant")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    loaded = inception.load(args.run)
    lines = []
    speeds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export.export_onnx(loaded, fp32, check=100_000)
        report = export.export_onnx(loaded, int8, int8=True, check=100_000)
        a = report.accuracy
        print(f"{args.run}: {report.checked_images} evaluation images; fp32 max |ORT - torch| "
              f"{report.max_abs_diff:.2e}; top-1 ORT fp32 {a['fp32_top1']:.2f}%, ORT int8 "
              f"{a['int8_top1']:.2f}% (drop {a['drop']:+.2f} points)")
        size, chans = loaded.image_size, loaded.config.in_chans
        for b in args.batch_sizes:
            x = loaded.normalize(torch.randint(0, 256, (b, chans, size, size), dtype=torch.uint8))
            name = f"trained model ({size} px, width {loaded.config.width})"
            speed = time_paths(loaded, fp32, int8, x, args.repeats)
            lines.append(row(name, b, speed))
            speeds.append({"model": name, "batch_size": b, "images_per_s": speed})

        if args.paper:
            torch.manual_seed(0)
            paper = inception.googlenet(aux_logits=False).eval()
            pre = {"crop": 224, "resize": 256, "mean": list(IMAGENET_MEAN),
                   "std": list(IMAGENET_STD)}
            lp = inception.LoadedModel(paper.to(memory_format=torch.channels_last), pre,
                                       [str(i) for i in range(1000)], Path(tmp))
            p32, p8 = Path(tmp) / "paper32.onnx", Path(tmp) / "paper8.onnx"
            onnx.save(export.to_onnx_model(lp), str(p32))
            train, _ = fashion_mnist()
            calib = F.interpolate(train.images[:64].float(), size=224, mode="bilinear")
            calib = lp.normalize(calib.clamp(0, 255).div(255).expand(-1, 3, -1, -1))  # [0, 1]
            export.quantize_int8(p32, p8, calib)
            b = args.batch_sizes[0]
            x = lp.normalize(torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8))
            name = "paper variant (224 px, LRN, 5x5; random weights)"
            speed = time_paths(lp, p32, p8, x, args.repeats)
            lines.append(row(name, b, speed))
            speeds.append({"model": name, "batch_size": b, "images_per_s": speed})

    print(f"\nimages/s, {args.threads} threads, median of {args.repeats} alternating rounds")
    print("| model | batch | torch fp32 channels_last | ORT fp32 | ORT int8 | int8 vs ORT fp32 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(lines))
    recorder.write({"run": args.run, "threads": args.threads, "repeats": args.repeats,
                    "checked_images": report.checked_images,
                    "fp32_max_abs_diff": report.max_abs_diff, "accuracy": report.accuracy,
                    "speeds": speeds})


if __name__ == "__main__":
    main()
