"""Wall time of looking inside a model: `predict --explain`'s maps, `visualize` and `dream`, on
the default Fashion-MNIST model and on the 224 px paper network.

    .venv/bin/python benchmarks/inside.py [--model RUN] [--threads 2] [--paper-steps 32]

Times the library calls the commands make (`inception.explain` + `save_explanations`,
`inception.visualize`, `inception.dream`), each once after a warm-up call of the smallest kind,
with the commands' defaults: 3 classes explained for one image; 16 channels of 4c for 512 steps;
DeepDream on 4c, 4 octaves of 1.4, 10 steps each. The paper network has random weights (its
time does not depend on them) and a 256 x 256 synthetic image; its feature visualization is
timed for `--paper-steps` steps and its 512-step time given as that per-step time x 512 (marked
"extrapolated"). The run's JSON record goes to benchmarks/results/ (`_record.py`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _record import Recorder, add_json_out_argument  # this folder's _record.py

import inception
from inception.config import GoogLeNetConfig
from inception.data import fashion_mnist
from inception.model import GoogLeNet
from inception.preprocessing import Preprocessing
from inception.weights import load, save_model

STEPS = 512


def _timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _paper_model(folder: Path) -> inception.LoadedModel:
    """The paper's GoogLeNet (Table 1, LRN, true 5x5), random weights, as a model directory."""
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    model = GoogLeNet(GoogLeNetConfig(aux_logits=False))
    save_model(folder, model.config, model.state_dict(), Preprocessing.centre_crop(
        224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), [str(i) for i in range(1000)])
    return load(folder)


def _measure(loaded, image: torch.Tensor, out: Path, steps: int) -> dict[str, float]:
    explain = _timed(lambda: inception.save_explanations(
        inception.explain(loaded, image, topk=3), out))
    visualize = _timed(lambda: inception.visualize(loaded, "4c", "0-15", steps=steps))
    dream = _timed(lambda: inception.dream(loaded, image, "4c"))
    return {"explain": explain, "visualize": visualize, "visualize_steps": steps,
            "dream": dream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/new-default/fashion-mnist-seed0",
                        help="a default-recipe Fashion-MNIST run directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paper-steps", type=int, default=32,
                        help="visualization steps timed on the paper network")
    add_json_out_argument(parser)
    args = parser.parse_args()
    recorder = Recorder(__file__, args)
    torch.set_num_threads(args.threads)

    fashion = load(args.model)
    item = fashion_mnist()[1].images[0]  # 1 x 28 x 28 uint8
    # DeepDream's 4 octaves need more than 28 px: the item enlarged 4x (112 px).
    big = torch.nn.functional.interpolate(item[None].float(), scale_factor=4,
                                          mode="bilinear")[0].round().clamp(0, 255).byte()
    photo = torch.nn.functional.interpolate(
        torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=256,
        mode="bicubic")[0].clamp(0, 1)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        paper = _paper_model(Path(tmp) / "paper")
        inception.visualize(fashion, "4c", "0", steps=2)  # warm-up
        fashion_times = _measure(fashion, big, Path(tmp) / "f", STEPS)
        fashion_times["explain"] = _timed(lambda: inception.save_explanations(
            inception.explain(fashion, item, topk=3), Path(tmp) / "f2"))
        figures["fashion-mnist"] = fashion_times
        paper_times = _measure(paper, photo, Path(tmp) / "p", args.paper_steps)
        per_step = paper_times["visualize"] / args.paper_steps
        paper_times["visualize_512_extrapolated"] = per_step * STEPS
        figures["paper-224"] = paper_times
    print(f"{'model':<28} {'explain (1 image)':>18} {'visualize 16 ch':>22} {'dream 4c':>10}")
    f, p = figures["fashion-mnist"], figures["paper-224"]
    print(f"{'Fashion-MNIST default':<28} {f['explain']:>17.1f}s {f['visualize']:>13.1f}s (512) "
          f"{f['dream']:>9.1f}s")
    print(f"{'paper network, 224 px':<28} {p['explain']:>17.1f}s "
          f"{p['visualize_512_extrapolated']:>6.0f}s (512, extrapolated from {args.paper_steps}) "
          f"{p['dream']:>9.1f}s")
    recorder.write(figures)


if __name__ == "__main__":
    main()
