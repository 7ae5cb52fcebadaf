"""`inception.predict`: the top classes of image files, as `inception predict` prints them.

Each image is decoded (any format PIL reads), cut into the model's 1, 10 or 144 test crops and
normalised by the model's own `Preprocessing` (`views`), and classified as `inception eval`
classifies it (`evaluation.predict_probabilities`, in the precision the model was trained in
unless told otherwise); the softmax is averaged over the crops, as in section 7 of the paper.
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
            precision: str | None = None) -> list[dict[str, Any]]:
    """[{"image": path, "predictions": [{"class": name, "probability": p}, ...]}, ...], the
    `topk` most probable classes of each image, most probable first. `precision` None: the
    one the model was trained in (`evaluation.trained_precision`).

    >>> inception.predict(inception.load("runs/RUN"), ["shirt.jpg"], topk=3)
    """
    from torchvision.transforms import v2

    to_tensor = v2.PILToTensor()
    mode = "L" if model.channels == 1 else "RGB"
    side = model.preprocessing.decode_side(crops)
    results = []
    for path in images:
        try:
            image = to_tensor(load_image(path, mode, side))
        except (OSError, ValueError, ImageError) as e:
            raise PredictError(f"IMAGE {path}: cannot read it as an image ({e})") from e
        views = model.preprocessing.views(image, crops)
        probs = evaluation.predict_probabilities([model], [views[None]],
                                                 precision=precision)[0].cpu()
        top = probs.topk(min(topk, len(model.classes)))
        results.append({"image": str(path), "predictions": [
            {"class": model.classes[i], "probability": round(p, 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]})
    return results
