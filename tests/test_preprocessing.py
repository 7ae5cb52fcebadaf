"""`inception.preprocessing.Preprocessing`: typed, stored in model.json, old files still read."""

import json

import pytest
import torch

from inception.preprocessing import Preprocessing, PreprocessingError


def test_the_json_form_is_what_model_json_always_held():
    p = Preprocessing(image_size=28, resize=28, crop=28, mean=(0.286,), std=(0.353,), channels=1)
    assert json.dumps(p.to_dict()) == json.dumps(
        {"image_size": 28, "resize": 28, "crop": 28, "mean": [0.286], "std": [0.353],
         "channels": 1, "interpolation": "bilinear"})
    assert Preprocessing.from_dict(p.to_dict()) == p
    warped = Preprocessing(image_size=224, resize=256, crop=224, mean=(0.5,) * 3, std=(0.2,) * 3,
                           channels=3, warp=True)  # Caffe's geometry, written only when set
    assert warped.to_dict()["warp"] is True and Preprocessing.from_dict(warped.to_dict()) == warped


def test_an_old_record_without_channels_or_image_size_reads():
    p = Preprocessing.from_dict({"crop": 224, "resize": 256, "mean": [0.5, 0.5, 0.5],
                                 "std": [1, 1, 1]})
    assert p.image_size == 224 and p.channels == 3 and p.std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("bad, message", [
    ({"crop": 28, "resize": 28, "mean": [0.5]}, "lacks std"),
    ({"crop": 28, "resize": 28, "mean": [0.5], "std": [0.2], "scale": 2}, "unknown"),
    ({"crop": 28, "resize": 20, "mean": [0.5], "std": [0.2]}, "smaller than the crop"),
    ({"crop": 28, "resize": 28, "mean": [0.5], "std": [0.2, 0.2]}, "one value per channel"),
    ({"crop": "big", "resize": 28, "mean": [0.5], "std": [0.2]}, "crop must be a positive"),
])
def test_bad_records_are_refused_by_name(bad, message):
    with pytest.raises(PreprocessingError, match=message):
        Preprocessing.from_dict(bad)


def test_normalize_scales_then_standardises_per_channel():
    p = Preprocessing(image_size=2, resize=2, crop=2, mean=(0.5, 0.0), std=(0.25, 1.0),
                      channels=2)
    x = torch.full((1, 2, 2, 2), 255, dtype=torch.uint8)
    out = p.normalize(x)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 2.0))
    assert torch.allclose(out[0, 1], torch.ones(2, 2))


@pytest.mark.parametrize("bad, message", [
    ({"crop": 0, "resize": 28, "mean": [0.5], "std": [0.2]}, "crop must be a positive integer"),
    ({"crop": 28.7, "resize": 32, "mean": [0.5], "std": [0.2]}, "crop must be a positive"),
    ({"crop": 28, "resize": 28, "mean": [0.5], "std": [float("inf")]}, "must be finite"),
    ({"crop": 28, "resize": 28, "mean": 0.5, "std": [0.2]}, "preprocessing"),
    ({"crop": 28, "resize": 28, "mean": [0.5], "std": [0.2], "interpolation": "cubic"},
     "interpolation must be one of"),
])
def test_values_that_cannot_describe_an_input_are_refused(bad, message):
    with pytest.raises(PreprocessingError, match=message):
        Preprocessing.from_dict(bad)
