"""Every class of bad input a user can hand us, and what happens: decoded, skipped, a clear error,
or a crash (anything else: a traceback, a foreign exception, code run from a file).

    .venv/bin/python benchmarks/bad_inputs.py [--threads 2]

Image files go through `load_image` one by one and then all together through a short training run
on an image folder (where undecodable ones must be skipped and listed). Folders, model files and
flags go through the `inception` command in this process; a clear error is exit status 2 with one
line on stderr and no traceback. Prints a Markdown table (README's "When things go wrong" is the
summary of it) and exits non-zero if anything crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inception import data as data_lib
from inception.cli import main as cli


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def jpeg(size=(40, 30), mode="RGB", **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120).save(buf, "JPEG", **kw)
    return buf.getvalue()


def png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def image_corpus() -> dict[str, tuple[str, bytes]]:
    """{file name: (what it is, bytes)}."""
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = Image.new("P", (20, 20))
    return {
        "truncated.jpg": ("JPEG cut to 200 bytes", jpeg()[:200]),
        "truncated.png": ("PNG cut in half", png(Image.new("RGB", (40, 40), 9))[:60]),
        "corrupt.png": ("PNG signature, garbage after", b"\x89PNG\r\n\x1a\n" + bytes(256) * 4),
        "empty.jpg": ("zero bytes", b""),
        "text.png": ("a text file named .png", b"hello\n" * 50),
        "random.jpg": ("random bytes named .jpg",
                       np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()),
        "cmyk.jpg": ("CMYK JPEG", jpeg(mode="CMYK")),
        "deep.png": ("16-bit grayscale PNG",
                     png(Image.fromarray(np.full((30, 30), 50000, np.uint16)))),
        "palette.png": ("palette PNG with transparency", png(palette, transparency=0)),
        "rgba.png": ("RGBA PNG", png(Image.new("RGBA", (30, 30), (200, 0, 0, 100)))),
        "la.png": ("grayscale + alpha PNG", png(Image.new("LA", (30, 30), (90, 255)))),
        "rotated.jpg": ("EXIF-rotated JPEG", jpeg((60, 20), exif=exif)),
        "dot.png": ("1x1 image (smaller than the crop)", png(Image.new("RGB", (1, 1), 7))),
        "sliver.png": ("1x300 image", png(Image.new("L", (1, 300), 7))),
    }


def run_cli(argv: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one `inception` command."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    except Exception as e:
        return "crash", f"{type(e).__name__}: {e}"
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    if rc == 2 and "Traceback" not in err.getvalue():
        return "clear error", text.split("error: ", 1)[-1]
    return ("ok" if rc == 0 else "crash"), text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str, str]] = []
    tmp = Path(tempfile.mkdtemp())
    marker = tmp / "payload-ran"

    # Image files, one by one.
    corpus = image_corpus()
    for name, (what, blob) in corpus.items():
        path = tmp / name
        path.write_bytes(blob)
        try:
            image = data_lib.load_image(path)
            rows.append(("image file", what, "decoded", f"{image.size[0]}x{image.size[1]} RGB"))
        except data_lib.ImageError as e:
            rows.append(("image file", what, "clear error (ImageError)", str(e)[:70]))
        except Exception as e:
            rows.append(("image file", what, "crash", f"{type(e).__name__}: {e}"))

    # All of them inside a training folder (62 images, 2 batches of 31: every file is read):
    # the run must finish and list the undecodable ones.
    train, test = data_lib.fashion_mnist(download=False)
    folder = tmp / "folder"
    for split, source in (("train", train), ("val", test)):
        for label, cls in ((1, "trouser"), (8, "bag")):
            d = folder / split / cls
            d.mkdir(parents=True)
            for i in (source.labels == label).nonzero().flatten()[:24].tolist():
                Image.fromarray(source.images[i, 0].numpy()).save(d / f"{i}.png")
    for name, (_, blob) in corpus.items():
        (folder / "train" / "bag" / name).write_bytes(blob)
    out = tmp / "run"
    outcome, detail = run_cli(["train", str(folder), "--recipe", "fashion-mnist", "--augment",
                               "folder", "--in-chans", "3", "--image-size", "32", "--width",
                               "0.25", "--epochs", "1", "--batch-size", "31", "--workers", "0",
                               "--no-progress", "--out", str(out)])
    skipped = json.loads((out / "skipped_files.json").read_text()) if (
        out / "skipped_files.json").exists() else {"count": 0}
    rows.append(("image folder", f"a training folder holding all {len(corpus)} files above",
                 "skipped" if outcome == "ok" else outcome,
                 f"run finished; {skipped['count']} files listed in skipped_files.json"))

    # Folder structure.
    def structure(what: str, mutate: Callable[[Path], None]) -> None:
        root = tmp / f"struct-{len(rows)}"
        shutil.copytree(folder, root)
        for name in corpus:
            (root / "train" / "bag" / name).unlink()
        mutate(root)
        rows.append(("folder", what, *run_cli(["train", str(root), "--out",
                                               str(tmp / f"o{len(rows)}")])))

    structure("an empty class folder", lambda r: (r / "train" / "coat").mkdir())
    structure("train/ and val/ with different classes",
              lambda r: shutil.rmtree(r / "val" / "bag"))
    structure("no images at all", lambda r: [p.unlink() for p in r.rglob("*.png")])
    structure("no train/ folder", lambda r: shutil.rmtree(r / "train"))
    rows.append(("folder", "DATA that is neither fashion-mnist nor a folder",
                 *run_cli(["train", str(tmp / "nowhere")])))

    # Model files.
    good = out  # the finished run above
    evil = tmp / "evil.pt"
    torch.save({"fc.weight": Payload(marker), "format": 2}, evil)
    disguised = tmp / "disguised"
    disguised.mkdir()
    shutil.copy(evil, disguised / "model.safetensors")
    shutil.copy(good / "model.json", disguised / "model.json")
    truncated = tmp / "truncated"
    shutil.copytree(good, truncated)
    blob = (good / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    ckpt_cut = tmp / "ckpt-cut"
    shutil.copytree(good, ckpt_cut)
    for name in ("last.pt", "previous.pt"):
        p = ckpt_cut / "checkpoints" / name
        if p.exists():
            p.write_bytes(p.read_bytes()[:4000])
    ckpt_evil = tmp / "ckpt-evil"
    shutil.copytree(good, ckpt_evil)
    shutil.copy(evil, ckpt_evil / "checkpoints" / "last.pt")
    (ckpt_evil / "checkpoints" / "previous.pt").unlink(missing_ok=True)
    wrong = tmp / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 7), "conv1.conv.weight": torch.zeros(1)}, wrong)
    image = next((folder / "val" / "bag").iterdir())
    model_cases = [
        ("a truncated model.safetensors (eval)", ["eval", str(truncated)]),
        ("a truncated checkpoint (--resume)", ["train", "--resume", "--out", str(ckpt_cut)]),
        ("--resume with a flag that differs from the run's config",
         ["train", "--resume", "--out", str(good), "--lr", "0.5"]),
        ("--init with a state dict that does not fit",
         ["train", str(folder), "--init", f"torchvision:{wrong}", "--batch-size", "16",
          "--out", str(tmp / "i1")]),
        ("a pickle with a payload: eval", ["eval", str(disguised)]),
        ("a pickle with a payload: predict", ["predict", str(disguised), str(image)]),
        ("a pickle with a payload: export",
         ["export", str(disguised), "--out", str(tmp / "x.onnx")]),
        ("a pickle with a payload: train --init",
         ["train", str(folder), "--init", f"torchvision:{evil}", "--batch-size", "16",
          "--out", str(tmp / "i2")]),
        ("a pickle with a payload: train --resume",
         ["train", "--resume", "--out", str(ckpt_evil)]),
    ]
    for what, argv in model_cases:
        rows.append(("model file", what, *run_cli(argv)))

    # Flags and config files.
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("epochs = 'ten'\n")
    unknown = tmp / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    broken = tmp / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    blocker = tmp / "a-file"
    blocker.write_text("")
    flag_cases = [
        ("--epochs 0", ["train", "--epochs", "0"]),
        ("--epochs -3", ["train", "--epochs", "-3"]),
        ("--batch-size larger than the data set",
         ["train", "--subset", "100", "--batch-size", "256", "--out", str(tmp / "b")]),
        ("an unknown recipe", ["train", "--recipe", "imagenet-in-a-minute"]),
        ("an unknown key in --config", ["train", "--config", str(unknown)]),
        ("a wrong type in --config", ["train", "--config", str(bad_toml)]),
        ("invalid YAML in --config", ["train", "--config", str(broken)]),
        ("an --out that cannot be created", ["train", "--subset", "256", "--out",
                                             str(blocker / "run")]),
        ("an --out that already holds something", ["train", "--out", str(good)]),
        ("--crops 5", ["eval", str(good), "--crops", "5"]),
    ]
    for what, argv in flag_cases:
        rows.append(("flag", what, *run_cli(argv)))

    print("| kind | input | outcome | detail |")
    print("|---|---|---|---|")
    for kind, what, outcome, detail in rows:
        detail = detail.replace(str(tmp), "TMP").replace("|", "/")
        print(f"| {kind} | {what} | {outcome} | {detail[:100]} |")
    crashes = sum(outcome == "crash" for _, _, outcome, _ in rows)
    print(f"\n{len(rows)} inputs: "
          f"{sum(o == 'decoded' for _, _, o, _ in rows)} decoded, "
          f"{sum(o == 'skipped' for _, _, o, _ in rows)} skipped, "
          f"{sum(o.startswith('clear error') for _, _, o, _ in rows)} clear errors, "
          f"{crashes} crashes; payload executed: {marker.exists()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if crashes or marker.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
