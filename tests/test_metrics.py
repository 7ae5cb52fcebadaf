"""`inception.metrics.Tally`: the counts training and `inception eval` both report."""

import torch

from inception.metrics import Tally, per_class_top1, summarize


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
    m = summarize(loss_sum, top5, confusion, n)
    assert m["top1"] == 100.0 * (predicted == labels).sum().item() / 50
    assert abs(m["loss"] - torch.nn.functional.cross_entropy(scores, labels).item()) < 1e-6
    per_class = per_class_top1(confusion)
    c = labels[0].item()
    assert per_class[c] == 100.0 * ((labels == c) & (predicted == c)).sum().item() / (
        labels == c).sum().item()


def test_top5_is_top_k_when_there_are_fewer_classes():
    tally = Tally(3)
    tally.add(torch.tensor([[0.1, 0.2, 0.7]]), torch.tensor([0]), torch.tensor(0.0))
    assert tally.totals()[1] == 1  # all 3 classes are in the "top 5"
