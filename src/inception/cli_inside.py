"""`inception visualize` and `inception dream`, the commands that look inside a model, and the
check of `predict --explain`'s flags: flags in (`inception.parser`), the library call
(`inception.visualize`, `inception.dream`, `inception.explain`), a PNG out and one line saying
what it holds. `inception.cli` dispatches to them (`INSIDE_COMMANDS`); as there, every refusal
is one line (`UsageError`, exit status 2) and comes before the long work."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from inception.flags import UsageError

if TYPE_CHECKING:
    import torch

    from inception.weights import LoadedModel


def check_explain(args: argparse.Namespace, model: LoadedModel) -> None:
    """--explain's head and layer, checked, and its folder, made, before any image is read."""
    from inception.explain import ExplainError, check_target

    if args.explain is None:
        raise UsageError("--explain-head and --explain-layer need --explain DIR")
    try:
        check_target(model.model, args.explain_head, args.explain_layer)
        Path(args.explain).mkdir(parents=True, exist_ok=True)
    except (ExplainError, OSError) as e:
        raise UsageError(f"--explain-{e}" if isinstance(e, ExplainError) else
                         f"--explain {args.explain}: cannot make the folder ({e})") from e


def _model(args: argparse.Namespace) -> LoadedModel:
    """MODEL on --device, and torch's CPU threads: --threads (set by `cli.main`) or, without it,
    one per core that other processes leave free (`devices.cpu_threads`)."""
    import torch

    from inception.devices import cpu_threads, resolve_device
    from inception.weights import WeightsError, load

    if args.threads is None:
        torch.set_num_threads(cpu_threads()[0])
    try:
        return load(args.model, resolve_device(args.device))
    except WeightsError as e:
        raise UsageError(str(e)) from e


def _folder(folder: Path) -> None:
    """--out's folder made before the long work, or a one-line refusal."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {folder}: cannot make the folder ({e.strerror or e})") from e


def _write(image: torch.Tensor, path: Path) -> Path:
    from inception.visualize import write_png

    try:
        return write_png(image, path)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write the PNG ({e.strerror or e})") from e


def visualize_command(args: argparse.Namespace) -> int:
    """The chosen channels' feature visualizations as one grid PNG,
    --out/LAYER[-BRANCH]-CHANNELS.png (an older file of that name is replaced)."""
    from inception.visualize import grid, visualize

    model = _model(args)
    out = Path(args.out)
    _folder(out)
    try:
        images = visualize(model, args.layer, args.channels, branch=args.branch,
                           steps=args.steps, size=args.size, seed=args.seed,
                           progress=not args.no_progress)
    except ValueError as e:  # a layer, branch or channel the model lacks; a --size too small
        raise UsageError(str(e)) from e
    channels = "".join((args.channels or f"0-{len(images) - 1}").split())
    name = "-".join([args.layer, *([args.branch] if args.branch else []), channels])
    path = _write(grid(images), out / f"{name}.png")
    side = images.shape[-1]
    print(f"{path}: {len(images)} channel(s) of layer {args.layer}"
          f"{f' branch {args.branch}' if args.branch else ''} ({channels}, row by row), "
          f"{side} x {side} px each, {args.steps} steps, seed {args.seed}")
    return 0


def dream_command(args: argparse.Namespace) -> int:
    """DeepDream of IMAGE as --out/IMAGE-LAYER.png (an older file of that name is replaced)."""
    from inception.dream import dream

    model = _model(args)
    out = Path(args.out)
    _folder(out)
    try:
        image = dream(model, args.image, args.layer, octaves=args.octaves,
                      octave_scale=args.octave_scale, steps=args.steps, lr=args.lr,
                      seed=args.seed, progress=not args.no_progress)
    except ValueError as e:  # an unknown layer, an unreadable image, an octave too small
        raise UsageError(str(e)) from e
    path = _write(image, out / f"{Path(args.image).stem}-{args.layer}.png")
    print(f"{path}: {args.image} dreamt at layer {args.layer}, {image.shape[-1]} x "
          f"{image.shape[-2]} px, {args.octaves} octave(s) of {args.octave_scale}, "
          f"{args.steps} steps each, seed {args.seed}")
    return 0


INSIDE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "visualize": visualize_command, "dream": dream_command}
