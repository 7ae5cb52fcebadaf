"""`inception.metrics.Tally`: the counts training and `inception eval` both report, and
`EvalResult`, the typed result both return."""

import dataclasses
import json

import pytest
import torch

from inception.metrics import EvalResult, Tally, per_class_top1


def test_tally_counts_top1_top5_confusion_and_loss():
    torch.manual_seed(0)
    scores = torch.randn(50, 7)
    labels = torch.randint(0, 7, (50,))
    tally = Tally(7)
    for s, y in zip(scores.split(16), labels.split(16), strict=True):
        tally.add(s, y, torch.nn.functional.cross_entropy(s, y, reduction="sum"))
    loss_sum, top5, confusion, n = tally.totals()
    assert n == 50 and confusion.shape == (7, 7) and confusion.sum() == 50
    predicted = scores.argmax(1)
    for i, j in [(0, 0), (3, 5), (6, 2)]:
        assert confusion[i, j] == ((labels == i) & (predicted == j)).sum()
    assert top5 == sum(int(y in s.topk(5).indices) for s, y in zip(scores, labels, strict=True))
    m = EvalResult.from_totals("test", (loss_sum, top5, confusion, n), "abcdefg")
    assert m.top1 == 100.0 * (predicted == labels).sum().item() / 50
    assert abs(m.loss - torch.nn.functional.cross_entropy(scores, labels).item()) < 1e-6
    per_class = per_class_top1(confusion)
    c = labels[0].item()
    assert per_class[c] == 100.0 * ((labels == c) & (predicted == c)).sum().item() / (
        labels == c).sum().item()


def test_top5_is_top_k_when_there_are_fewer_classes():
    tally = Tally(3)
    tally.add(torch.tensor([[0.1, 0.2, 0.7]]), torch.tensor([0]), torch.tensor(0.0))
    assert tally.totals()[1] == 1  # all 3 classes are in the "top 5"


def _result(**details) -> EvalResult:
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [1, 0, 5]])
    return EvalResult.from_totals("val", (4.5, 9, confusion, 10), ("a", "b", "c"), **details)


def test_an_eval_result_names_its_split_and_is_frozen():
    r = _result(models=2, crops=10, precision="bf16", images_per_s=12.345,
                model_paths=("x", "y"))
    assert (r.split, r.images, r.loss, r.top1, r.top5) == ("val", 10, 0.45, 80.0, 90.0)
    assert (r.cost, r.top1_error, r.top5_error) == (20, 20.0, 10.0)
    # Classes without images ("b") have no per-class accuracy.
    assert r.per_class_top1 == {"a": 75.0, "c": pytest.approx(100 * 5 / 6)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.top1 = 0.0


def test_the_json_form_is_what_inception_eval_always_wrote():
    d = _result(images_per_s=12.345, model_paths=("m.safetensors",)).to_json()
    assert list(d) == ["split", "images", "models", "crops", "cost", "top1", "top5",
                       "top1_error", "top5_error", "loss", "per_class_top1", "confusion",
                       "images_per_s", "precision", "model_paths"]
    assert d["per_class_top1"] == {"a": 75.0, "c": 83.33} and d["images_per_s"] == 12.3
    assert d["confusion"] == [[3, 1, 0], [0, 0, 0], [1, 0, 5]]
    json.dumps(d)


def test_no_images_at_all_is_an_error_naming_the_split():
    with pytest.raises(ValueError, match="no val image could be evaluated"):
        EvalResult.from_totals("val", (0.0, 0, torch.zeros(2, 2, dtype=torch.long), 0), "ab")
