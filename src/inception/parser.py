"""The `inception` parser: every command's flags, declared once where commands share them.

Config fields become flags through `inception.flags.add_config_arguments`, each with its field's
one-line documentation; `train --help` shows the values of the run its other arguments would start
(`help_values`).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import platform
import re
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from inception.config import MAX_CLASSES, GoogLeNetConfig
from inception.devices import DEVICE_CHOICES
from inception.dream import OCTAVE_SCALE, OCTAVES, STEP
from inception.dream import STEPS as DREAM_STEPS
from inception.export_openvino import PRECISIONS as EXPORT_PRECISIONS
from inception.flags import (
    PRECISION_HELP,
    THREADS_HELP,
    UsageError,
    add_config_arguments,
    number,
    train_config_from_arguments,
)
from inception.recipes import RECIPES
from inception.runtimes import RUNTIMES
from inception.train.config import (
    COMPILE_MODES,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_WORKERS,
    TrainConfig,
)
from inception.visualize import BRANCHES
from inception.visualize import STEPS as VISUALIZE_STEPS


class Parser(argparse.ArgumentParser):
    """argparse without abbreviated flags (`--epoch` is not `--epochs`), and with a 'did you
    mean' for a flag it does not know."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line on stderr, naming the command and what is wrong; exit status 2. A number out
        of its flag's range (`flags.number`) reads "--flag must be ...; got VALUE"."""
        message = re.sub(r"^argument (--[\w-]+): must be ", r"\1 must be ", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown(self, extras: list[str]) -> None:
        """Exit 2 naming the first unknown argument, with the nearest flag of this parser."""
        bad = next((e for e in extras if e.startswith("-")), extras[0])
        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        guess = difflib.get_close_matches(bad.split("=")[0], options, n=1, cutoff=0.6)
        if guess:
            self.exit(2, f"{self.prog}: error: unrecognized argument {bad}; did you mean "
                         f"{guess[0]}?\n")
        self.error(f"unrecognized argument {bad}")


# Every flag that more than one command takes, declared once: one name, one meaning.
SHARED: dict[str, dict[str, Any]] = {
    "--threads": dict(type=number(int, 1, 1024), default=None, metavar="N", help=THREADS_HELP),
    "--device": dict(default="auto", choices=DEVICE_CHOICES,
                     help="auto (default): the CUDA GPU when there is one, else the CPU"),
    "--crops": dict(type=int, choices=(1, 10, 144), default=1,
                    help="views per image, softmax averaged (section 7): 1 (centre), 10 "
                         "(corners, centre and mirrors) or 144 (default: 1)"),
    "--precision": dict(choices=("fp32", "bf16"), default=None, help=PRECISION_HELP),
    "--runtime": dict(choices=RUNTIMES, default=None,
                      help="what runs MODEL: torch for a run directory; an exported .onnx runs "
                           "in onnxruntime (default) or openvino, an .xml in openvino (default: "
                           "the file's own)"),
    "--data-dir": dict(metavar="DIR", help="where Fashion-MNIST's IDX files are (or go)"),
    "--compile": dict(nargs="?", const="default", default=None, choices=COMPILE_MODES[1:],
                      metavar="MODE",
                      help="use torch.compile (MODE: default, reduce-overhead for CUDA graphs, "
                           "max-autotune): train compiles its forward, bench adds compiled rows"),
    "--no-progress": dict(action="store_true", help="no progress bars"),
    "--layer": dict(default="4c", metavar="LAYER",
                    help="a layer by its Table 1 row: conv1, pool1, conv2, pool2, 3a, 3b, "
                         "pool3, 4a .. 4e, pool4, 5a, 5b, avgpool, linear (default: 4c)"),
    "--seed": dict(type=number(int, 0, 2**32 - 1), default=0, metavar="S",
                   help="seed of every random draw: the same seed gives the same image, bit "
                        "for bit, on the same device with the same --threads (default: 0)"),
    "--json": dict(action="store_true", help="machine-readable output"),
}


def _shared(*flags: str) -> list[argparse.ArgumentParser]:
    """A parent parser holding the shared `flags` (`--threads` always), for `add_parser`."""
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--threads", *flags):
        parent.add_argument(flag, **SHARED[flag])
    return [parent]


def _summary_parser(sub, parents: list) -> argparse.ArgumentParser:
    summary = sub.add_parser(
        usage="inception summary [MODEL] [--json] [--plot FILE] [--module-cost] [--preset NAME] "
              "[model flags]",
        name="summary", help="print Table 1 computed from the model", parents=parents,
        description="Table 1 recomputed from the model (params, multiply-adds, output sizes), "
                    "beside the paper's printed figures, with the paper's slips flagged. With "
                    "MODEL: the table of a trained model's config, and its recorded results.")
    summary.add_argument("model", nargs="?", default=None, metavar="MODEL",
                         help="a run or model directory (default: the model the flags build)")
    summary.add_argument("--plot", metavar="FILE", help="write per-row params and multiply-adds "
                                                        "as a PNG")
    summary.add_argument("--module-cost", action="store_true",
                         help="the 1x1-reduction argument: naive vs reduced modules in numbers")
    summary.add_argument("--preset", choices=("paper", "torchvision"), default="paper",
                         help="start from the paper's config (default) or torchvision's layout")
    add_config_arguments(summary)
    return summary


def _recipes_text(shown: str) -> str:
    return (f"Recipes: {', '.join(RECIPES)}. Without --recipe: fashion-mnist on the built-in "
            "data set, paper on an image folder, finetune with --init. The defaults below are "
            f"those of the run these arguments start: recipe {shown}, then --config, then "
            "flags (--print-config prints them all).")


def _train_parser(sub, parents: list, values: TrainConfig) -> argparse.ArgumentParser:
    train = sub.add_parser(
        usage="inception train [DATA] [--out DIR] [--recipe NAME] [options]",
        name="train", help="train on Fashion-MNIST (default) or an image folder", parents=parents,
        description="Train GoogLeNet. Settings come from the recipe, then --config, then flags. "
                    + _recipes_text(values.recipe))
    train.add_argument("data", nargs="?", default=None, metavar="DATA",
                       help="'fashion-mnist' (default) or a folder with train/ and val/ class "
                            "folders")
    train.add_argument("--out", metavar="DIR",
                       help="run directory (default: runs/RECIPE-TIMESTAMP)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--config", metavar="FILE",
                       help="YAML or TOML file of config fields, or a run's config.json")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config as JSON and exit without training")
    train.add_argument("--stop-after", type=number(int, 1, MAX_EPOCHS), metavar="N",
                       help="stop after epoch N, checkpointed, to continue later with --resume")
    train.add_argument("--checkpoint-every", type=number(int, 0), default=100, metavar="STEPS",
                       help="also checkpoint every STEPS optimizer steps, so that a killed run "
                            "loses at most that much (0: only at epoch ends; default 100)")
    train.add_argument("--sync-every", type=number(int, 1), default=None, metavar="STEPS",
                       help="read the loss from the device every STEPS steps: NaN check, progress "
                            "bar, SIGTERM poll (default: 1 on the CPU, 50 on a GPU)")
    add_config_arguments(train, TrainConfig, "training", values)
    add_config_arguments(train, GoogLeNetConfig, "model", values.model)
    recipe = next(a for a in train._actions if "--recipe" in a.option_strings)
    recipe.choices, recipe.metavar = list(RECIPES), "NAME"
    return train


MODEL_HELP = ("a run directory of `inception train` (or `inception import-caffe`), or its "
              "model.safetensors")
RUNNABLE_HELP = MODEL_HELP + ", or a file `inception export` wrote (.onnx, .xml)"


def _eval_parser(sub, parents: list) -> argparse.ArgumentParser:
    ev = sub.add_parser(
        "eval", help="top-1/top-5 with 1, 10 or 144 crops, and ensembles", parents=parents,
        description="Evaluate a trained model (or an ensemble) as the paper's section 7 does: "
                    "softmax averaged over crops and models.")
    ev.add_argument("model", metavar="MODEL", help=RUNNABLE_HELP)
    ev.add_argument("data", nargs="?", default=None, metavar="DATA",
                    help="'fashion-mnist' or an image folder with val/ (default: the model's)")
    ev.add_argument("--ensemble", nargs="+", metavar="MODEL", help="more models to average")
    ev.add_argument("--subset", type=number(int, 1), metavar="N", help="only the first N images")
    ev.add_argument("--batch-size", type=number(int, 1, MAX_BATCH), default=None, metavar="N",
                    help="images per batch (default: the model's evaluation batch)")
    ev.add_argument("--workers", type=number(int, 0, MAX_WORKERS), default=2, metavar="N",
                    help="DataLoader worker processes for image folders (in-memory data sets "
                         "use none; default 2)")
    ev.add_argument("--out", metavar="DIR",
                    help="folder for the confusion PNG and JSON (default: the model's)")
    ev.add_argument("--force", action="store_true",
                    help="replace a results file that holds a different evaluation")
    return ev


def _predict_parser(sub, parents: list) -> argparse.ArgumentParser:
    pr = sub.add_parser("predict", help="classify images", parents=parents,
                        description="Print the top classes of each image with probabilities.")
    pr.add_argument("model", metavar="MODEL", help=RUNNABLE_HELP)
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    pr.add_argument("--topk", type=number(int, 1, MAX_CLASSES), default=None, metavar="K",
                    help="classes to print per image, at most the model's (default: 5, or all "
                         "of a model with fewer)")
    pr.add_argument("--explain", metavar="DIR",
                    help="also write a PNG per image to DIR: where in its crop each top class "
                         "is seen (class activation map; Grad-CAM for an FC or aux head)")
    pr.add_argument("--explain-head", default="main", metavar="HEAD",
                    help="the classifier --explain maps: main (default), or aux-4a or aux-4d "
                         "of a model with aux heads")
    pr.add_argument("--explain-layer", metavar="LAYER",
                    help="the Table 1 row --explain maps (default: 5b, or the aux head's 4a or "
                         "4d); any other than 5b uses Grad-CAM")
    return pr


def _export_parser(sub, parents: list) -> argparse.ArgumentParser:
    ex = sub.add_parser("export", help="ONNX or OpenVINO (fp32, bf16, INT8), or torch.export",
                        parents=parents,
                        description="Export a trained model to FILE; the file carries its "
                                    "config, preprocessing and class names, and is checked "
                                    "against PyTorch before it is written.")
    ex.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    ex.add_argument("file", metavar="FILE", help="the file to write (.onnx; .xml, with its .bin "
                                                 "beside it, for --format openvino; .pt2 for "
                                                 "--format torch-export)")
    ex.add_argument("--format", choices=("onnx", "openvino", "torch-export"), default="onnx",
                    help="onnx (default), openvino (needs the openvino extra) or torch-export "
                         "(a torch.export program)")
    ex.add_argument("--precision", choices=EXPORT_PRECISIONS, default=None,
                    help="what the runtime computes in: fp32 (default), bf16 (openvino only) or "
                         "int8 (static post-training quantization: onnxruntime's QDQ for onnx, "
                         "NNCF's for openvino)")
    ex.add_argument("--int8", action="store_true", help="the same as --precision int8")
    ex.add_argument("--calibration", type=number(int, 1), default=512, metavar="N",
                    help="training images to calibrate INT8 on (default: 512)")
    ex.add_argument("--check", type=number(int, 1), default=1000, metavar="N",
                    help="evaluation images to check the export on (default: 1000)")
    ex.add_argument("--data", default=None, metavar="DATA",
                    help="data to check and calibrate on (default: the model's)")
    ex.add_argument("--force", action="store_true", help="overwrite FILE")
    return ex


def _bench_parser(sub, parents: list) -> argparse.ArgumentParser:
    be = sub.add_parser("bench", help="inference (and training) speed beside torchvision's",
                        parents=parents,
                        description="Our paths next to torchvision's googlenet in eager PyTorch, "
                                    "ONNX Runtime and (with the openvino extra) OpenVINO, "
                                    "alternated in one process, medians.")
    # Bounds: a batch of 4096 images of 1024 px is already ~50 GB of input; 1000 rounds of every
    # path take hours.
    be.add_argument("--batch-size", type=number(int, 1, 4096), default=None, metavar="N",
                    help="images per batch (default: 32 on the CPU, 256 on a GPU)")
    be.add_argument("--image-size", type=number(int, 32, 1024), default=224, metavar="PX",
                    help="input side in pixels (default: 224)")
    be.add_argument("--repeats", type=number(int, 1, 1000), default=5, metavar="N",
                    help="alternating rounds (default: 5)")
    be.add_argument("--train", action="store_true", help="also a training step with aux heads")
    be.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    be.add_argument("--no-openvino", action="store_true",
                    help="skip the OpenVINO rows (there are none without the openvino extra)")
    return be


def _experiment_parser(sub, parents: list) -> argparse.ArgumentParser:
    from inception.experiments.claims import EXPERIMENTS

    exp = sub.add_parser(
        "experiment", help="test one of the paper's design claims (or all of them) as an ablation",
        parents=parents,
        description="Train each arm of the experiment over several seeds (resumable: finished "
                    "runs are kept, interrupted ones resume), then print its table and write "
                    "its table, JSON and plot. Experiments: " + ", ".join(EXPERIMENTS) + ".")
    exp.add_argument("name", metavar="NAME", choices=(*EXPERIMENTS, "all"),
                     help="an experiment's name, or all")
    exp.add_argument("--out", default="runs/experiments", metavar="DIR",
                     help="folder of the runs and results (default runs/experiments)")
    exp.add_argument("--seeds", type=number(int, 1, 100), default=None, metavar="N",
                     help="seeds 0 .. N-1 for every arm (default: each experiment's planned "
                          "number, docs/claims.md)")
    exp.add_argument("--report-only", action="store_true",
                     help="train nothing: build the reports from the runs finished so far")
    return exp


def _import_caffe_parser(sub, parents: list) -> argparse.ArgumentParser:
    ic = sub.add_parser(
        "import-caffe", help="import Caffe's bvlc_googlenet.caffemodel as a model directory",
        parents=parents,
        description="Read a bvlc_googlenet .caffemodel (either Caffe layer format; no Caffe "
                    "needed), check it layer by layer and write model.safetensors + model.json, "
                    "which eval, predict and export take like any trained model.")
    ic.add_argument("caffemodel", metavar="CAFFEMODEL", help="the downloaded .caffemodel file")
    ic.add_argument("--out", required=True, metavar="DIR", help="the model directory to write")
    ic.add_argument("--classes", metavar="FILE",
                    help="class names, one per line (default: ImageNet's, for 1000 outputs)")
    ic.add_argument("--force", action="store_true", help="replace a model already in --out")
    return ic


def _visualize_parser(sub, parents: list) -> argparse.ArgumentParser:
    vi = sub.add_parser(
        "visualize", help="feature visualization: an image that excites each chosen channel",
        parents=parents,
        description="Feature visualization by activation maximisation (Olah et al., 'Feature "
                    "Visualization', Distill 2017): for each channel, an image optimised to "
                    "excite it, written as one grid PNG (row by row, in the order of "
                    "--channels) to DIR/LAYER[-BRANCH]-CHANNELS.png.")
    vi.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    vi.add_argument("--channels", metavar="LIST",
                    help="channels to show: 0-15, 7 or 0,3,9-11 (default: the first 16)")
    vi.add_argument("--branch", choices=tuple(BRANCHES), metavar="BRANCH",
                    help="one branch of the Inception module --layer: 1x1, 3x3, 5x5 or pool "
                         "(channels then count within the branch)")
    vi.add_argument("--out", required=True, metavar="DIR", help="folder for the grid PNG")
    vi.add_argument("--steps", type=number(int, 1, 100_000), default=VISUALIZE_STEPS,
                    metavar="N", help=f"Adam steps (default: {VISUALIZE_STEPS}, lucid's)")
    vi.add_argument("--size", type=number(int, 8, 2048), default=None, metavar="PX",
                    help="image side in pixels (default: the model's input size)")
    return vi


def _dream_parser(sub, parents: list) -> argparse.ArgumentParser:
    dr = sub.add_parser(
        "dream", help="DeepDream: an image changed to excite a layer more", parents=parents,
        description="DeepDream (Mordvintsev et al., 'Inceptionism', 2015): gradient ascent on "
                    "the L2 norm of a layer's activation over an image pyramid, with the "
                    "original notebook's defaults for bvlc_googlenet. Writes a PNG of the "
                    "image's own size, DIR/IMAGE-LAYER.png (IMAGE's file name without its "
                    "suffix).")
    dr.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    dr.add_argument("image", metavar="IMAGE", help="the image file to dream on")
    dr.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG")
    dr.add_argument("--octaves", type=number(int, 1, 20), default=OCTAVES, metavar="N",
                    help=f"levels of the image pyramid (default: {OCTAVES})")
    dr.add_argument("--octave-scale", type=number(float, 1, 4), default=OCTAVE_SCALE,
                    metavar="X", help=f"size ratio of one level to the next (default: "
                                      f"{OCTAVE_SCALE})")
    dr.add_argument("--steps", type=number(int, 1, 10_000), default=DREAM_STEPS, metavar="N",
                    help=f"gradient steps per octave (default: {DREAM_STEPS})")
    dr.add_argument("--lr", type=number(float, 0, 255, low_open=True), default=STEP,
                    metavar="LEVELS", help=f"step size: the mean change of a pixel per step, in "
                                           f"0-255 levels (default: {STEP})")
    return dr


def _version() -> str:
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    from inception import __version__

    return (f"inception {__version__} (torch {version('torch')}, torchvision "
            f"{version('torchvision')}, Python {platform.python_version()})")


def build_parser(commands: dict[str, Callable[[argparse.Namespace], int]] | None = None,
                 train_values: TrainConfig | None = None) -> Parser:
    """The `inception` parser; `commands` maps each command to the function that runs it
    (`args.func`). `train_values` is the config `train --help` shows as its defaults (the
    default recipe's when None)."""
    from inception.recipes import get_recipe

    parser = Parser(
        prog="inception",
        description="GoogLeNet from 'Going Deeper with Convolutions' (Szegedy et al., 2014).")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    values = train_values or get_recipe("fashion-mnist")
    parsers = {
        "summary": _summary_parser(sub, _shared("--json")),
        "train": _train_parser(sub, _shared("--device", "--data-dir", "--compile", "--no-progress"),
                               values),
        "eval": _eval_parser(sub, _shared("--device", "--crops", "--precision", "--runtime",
                                          "--data-dir", "--json")),
        "predict": _predict_parser(sub, _shared("--device", "--crops", "--precision",
                                                "--runtime", "--json")),
        "export": _export_parser(sub, _shared("--data-dir", "--json")),
        "bench": _bench_parser(sub, _shared("--device", "--compile", "--json")),
        "experiment": _experiment_parser(sub, _shared("--device", "--data-dir", "--no-progress")),
        "import-caffe": _import_caffe_parser(sub, _shared()),
        "visualize": _visualize_parser(sub, _shared("--device", "--layer", "--seed",
                                                    "--no-progress")),
        "dream": _dream_parser(sub, _shared("--device", "--layer", "--seed", "--no-progress")),
    }
    for name, p in parsers.items():
        p.set_defaults(func=(commands or {}).get(name))
    parser.subcommands = parsers
    return parser


def help_values(argv: Sequence[str]) -> TrainConfig | None:
    """For `inception train ... --help`: the config the other arguments resolve to, so that
    help shows the values of the run they would start (None when they do not resolve)."""
    if "train" not in argv or not {"-h", "--help"} & set(argv):
        return None
    probe = build_parser()
    rest = [a for a in argv if a not in ("-h", "--help")]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = probe.parse_known_args(rest)
        return train_config_from_arguments(args)[0]
    except (SystemExit, UsageError, ValueError, TypeError):
        return None
