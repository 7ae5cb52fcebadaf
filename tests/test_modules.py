import pytest
import torch
from torch import nn

from inception.modules import AuxClassifier, ConvReLU, Inception


def test_conv_relu_is_relu_everywhere_and_bn_only_when_asked():
    plain, bn = ConvReLU(3, 8, 3), ConvReLU(3, 8, 3, batch_norm=True)
    x = torch.randn(2, 3, 9, 9)
    assert (plain(x) >= 0).all() and (bn(x) >= 0).all()
    assert plain(x).shape == (2, 8, 9, 9)  # "same" padding
    assert plain.conv.bias is not None and isinstance(plain.bn, nn.Identity)
    assert bn.conv.bias is None and isinstance(bn.bn, nn.BatchNorm2d)
    assert ConvReLU(3, 8, 7, stride=2)(torch.randn(1, 3, 224, 224)).shape[-1] == 112


def _kernels(module):
    return [m.kernel_size[0] for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_reduced_inception_3a():
    m = Inception(192, 64, 96, 128, 16, 32, 32)
    y = m(torch.randn(1, 192, 28, 28))
    assert y.shape == (1, 256, 28, 28) and m.out_channels == 256
    assert sorted(_kernels(m)) == [1, 1, 1, 1, 3, 5]
    assert m.filter_counts() == dict(n1x1=64, n3x3_reduce=96, n3x3=128, n5x5_reduce=16, n5x5=32,
                                     pool_proj=32)
    # Every conv, reductions and the pool projection included, is followed by a ReLU.
    assert (y >= 0).all()


def test_naive_inception_passes_pool_channels_through():
    m = Inception(192, 64, 96, 128, 16, 32, 32, naive=True)
    y = m(torch.randn(1, 192, 28, 28))
    assert y.shape == (1, 64 + 128 + 32 + 192, 28, 28)
    assert sorted(_kernels(m)) == [1, 3, 5]
    # The pool branch is the 3x3/1 max pool of the input, untouched.
    x = torch.randn(1, 192, 28, 28)
    pooled = nn.functional.max_pool2d(x, 3, 1, 1)
    assert torch.equal(m(x)[:, -192:], pooled)


def test_branch5x5_kernel_switch():
    m = Inception(192, 64, 96, 128, 16, 32, 32, branch5x5_kernel=3)
    assert sorted(_kernels(m)) == [1, 1, 1, 1, 3, 3]


@pytest.mark.parametrize("channels", [512, 528])
def test_aux_classifier_is_the_papers(channels):
    head = AuxClassifier(channels, 1000, dropout=0.7)
    assert isinstance(head.pool, nn.AvgPool2d)
    assert head.pool.kernel_size == 5 and head.pool.stride == 3
    x = torch.randn(2, channels, 14, 14)
    assert head.pool(x).shape == (2, channels, 4, 4)  # "4x4x512 ... 4x4x528"
    assert head.conv.conv.out_channels == 128 and head.conv.conv.kernel_size == (1, 1)
    assert (head.fc1.in_features, head.fc1.out_features) == (128 * 16, 1024)
    assert head.dropout.p == 0.7
    assert head(x).shape == (2, 1000)


def test_aux_adaptive_pool_differs_from_5x5_stride_3():
    x = torch.randn(1, 4, 14, 14)
    paper = nn.AvgPool2d(5, 3)(x)
    adaptive = nn.AdaptiveAvgPool2d(4)(x)
    assert paper.shape == adaptive.shape
    assert not torch.allclose(paper, adaptive)
