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


@pytest.mark.parametrize("batch_norm, pool_branch", [(True, True), (False, True), (True, False)])
def test_the_fused_training_forward_computes_what_the_blocks_do(batch_norm, pool_branch):
    """In training the input-side 1x1 convolutions run as one, and the BatchNorms and ReLUs as
    two (`Inception._fused_forward`): the same outputs, gradients and BN statistics as the
    blocks one by one (what eval mode and a traced graph run)."""
    torch.manual_seed(0)
    fused = Inception(24, 8, 6, 12, 2, 4, 4, batch_norm=batch_norm,
                      pool_branch=pool_branch).train()
    plain = Inception(24, 8, 6, 12, 2, 4, 4, batch_norm=batch_norm,
                      pool_branch=pool_branch).train()
    plain.load_state_dict(fused.state_dict())
    plain.fuse_in_training = False  # the blocks one by one
    assert fused._fusable()
    x = torch.randn(4, 24, 7, 7).contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # twice: the running statistics are carried on
        a, b = fused(x.requires_grad_()), plain(x)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (a * torch.arange(a.shape[1]).view(1, -1, 1, 1)).sum().backward()
    (b * torch.arange(b.shape[1]).view(1, -1, 1, 1)).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() <= 1e-5 * q.grad.abs().max(), name
    for (name, s), t in zip(fused.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(s, t, rtol=1e-5, atol=1e-6, msg=name)


def test_sync_batch_norm_naive_modules_and_mixed_momenta_run_block_by_block():
    """The concatenated form would skip SyncBatchNorm's all-reduce; naive modules have no
    reductions to fuse; BatchNorms with different momenta cannot share one call."""
    bn = Inception(24, 8, 6, 12, 2, 4, 4, batch_norm=True)
    assert bn._fusable()
    assert not nn.SyncBatchNorm.convert_sync_batchnorm(bn)._fusable()
    assert not Inception(24, 8, 6, 12, 2, 4, 4, naive=True)._fusable()
    bn.branch3[1].bn.momentum = 0.01  # one BatchNorm call has one momentum
    assert not bn._fusable()


def test_hooks_and_frozen_batch_norms_run_block_by_block():
    """The fused form calls none of the blocks' layers: with a hook on one of them (cost
    counting, pruning), or a BatchNorm frozen in eval mode inside a training module, the blocks
    run one by one and give what they give."""
    torch.manual_seed(0)
    m = Inception(24, 8, 6, 12, 2, 4, 4, batch_norm=True).train()
    assert m._fusable()
    calls = []
    handle = m.branch1.conv.register_forward_hook(lambda *a: calls.append(1))
    assert not m._fusable()
    m(torch.randn(2, 24, 7, 7))
    assert calls == [1]
    handle.remove()
    m.branch2[0].bn.eval()  # frozen statistics, as when fine-tuning
    assert not m._fusable()
    x = torch.randn(2, 24, 7, 7)
    m.fuse_in_training = False
    expected = m(x)
    m.fuse_in_training = True
    torch.testing.assert_close(m(x), expected)
