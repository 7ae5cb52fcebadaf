"""`inception.predict`: the top classes of image files, as `inception predict` prints them.

Each image is decoded (any format PIL reads), cut into the model's 1, 10 or 144 test crops
(`inception.evaluation`), normalised with the model's own preprocessing and classified; the
softmax is averaged over the crops, as in section 7 of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inception import evaluation
from inception.data import ImageError, load_image
from inception.weights import LoadedModel


class PredictError(ValueError):
    """An image that cannot be read; the message names the file."""


def predict(model: LoadedModel, images: Sequence[str | Path], topk: int = 5, crops: int = 1,
            precision: str = "fp32") -> list[dict[str, Any]]:
    """[{"image": path, "predictions": [{"class": name, "probability": p}, ...]}, ...], the
    `topk` most probable classes of each image, most probable first.

    >>> inception.predict(inception.load("runs/RUN"), ["shirt.jpg"], topk=3)
    """
    from torchvision.transforms import v2

    to_tensor = v2.PILToTensor()
    mode = "L" if model.channels == 1 else "RGB"
    side = evaluation.largest_scale([model], crops)
    results = []
    for path in images:
        try:
            image = to_tensor(load_image(path, mode, side))
        except (OSError, ValueError, ImageError) as e:
            raise PredictError(f"IMAGE {path}: cannot read it as an image ({e})") from e
        views = evaluation.model_views(image, model, crops)
        probs = evaluation.predict_probabilities([model], [views[None]], precision=precision)[0]
        top = probs.topk(min(topk, len(model.classes)))
        results.append({"image": str(path), "predictions": [
            {"class": model.classes[i], "probability": round(p, 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]})
    return results
