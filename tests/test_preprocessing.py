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


def test_views_are_the_crops_of_the_resized_image_normalised():
    """`views` resizes the shorter side to `resize`, cuts the crops and normalises them; the
    record called on an image is its 1-crop view, on one image or a batch of one size."""
    from inception.preprocessing import crop_boxes, extract_crops

    p = Preprocessing(image_size=4, resize=5, crop=4, mean=(0.5,), std=(0.25,), channels=1)
    image = torch.arange(8 * 10, dtype=torch.uint8).view(1, 8, 10) * 3
    boxes = crop_boxes(10, 8, 10, 4, resize=5)
    assert torch.equal(p.views(image, 10), p.normalize(extract_crops(image, boxes, 4)))
    one = p(image)
    assert one.shape == (1, 4, 4) and torch.equal(one, p.views(image, 1)[0])
    batch = torch.stack([image, image.flip(-1)])
    assert torch.equal(p(batch)[0], one) and p.views(batch, 144).shape == (2, 144, 1, 4, 4)
    assert (p.decode_side(1), p.decode_side(10), p.decode_side(144)) == (5, 5, 7)


def test_a_warped_record_resizes_the_whole_image_first():
    import torchvision.transforms.v2.functional as TF

    p = Preprocessing(image_size=4, resize=6, crop=4, mean=(0.0,), std=(1.0,), channels=1,
                      warp=True)
    image = torch.randint(0, 256, (1, 9, 13), dtype=torch.uint8)
    warped = TF.resize(image, [6, 6], antialias=True)
    assert torch.equal(p(image), p.normalize(warped[:, 1:5, 1:5]))


def test_standardize_takes_sequences_or_tensors_on_the_images_device():
    from inception.preprocessing import standardize, to_unit

    x = to_unit(torch.full((2, 2, 3, 3), 51, dtype=torch.uint8))
    assert torch.allclose(x, torch.full_like(x, 0.2))
    by_list = standardize(x, (0.1, 0.2), (0.5, 2.0))
    by_tensor = standardize(x, torch.tensor([0.1, 0.2]).view(1, 2, 1, 1),
                            torch.tensor([0.5, 2.0]).view(1, 2, 1, 1))
    assert torch.equal(by_list, by_tensor)
    assert torch.allclose(by_list[:, 0], torch.full((2, 3, 3), 0.2)) and \
        torch.allclose(by_list[:, 1], torch.zeros(2, 3, 3))
