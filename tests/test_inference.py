import pytest
import torch
from torch import nn

from inception import GoogLeNetConfig, googlenet
from inception.inference import ConvLRN, FusedInception, MaxPool3x3, optimize_for_inference
from inception.modules import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, LocalResponseNorm

CONFIGS = {
    "paper": GoogLeNetConfig(image_size=80),
    "torchvision": GoogLeNetConfig.torchvision(image_size=80),
    "naive": GoogLeNetConfig(image_size=80, module="naive", width=0.25),
    "small-bn": GoogLeNetConfig(num_classes=10, in_chans=1, image_size=28, stem="small",
                                norm="bn", width=0.5, aux_pool="adaptive"),
}


def _trained_like(config: GoogLeNetConfig) -> torch.nn.Module:
    """A model with non-trivial BN statistics and biases, as after training."""
    torch.manual_seed(0)
    model = googlenet(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.05, 0.05)
        model.layers["linear"].weight.normal_(std=0.1)
    return model.eval()


@pytest.mark.parametrize("size", [LRN_SIZE, 4])
@pytest.mark.parametrize("chunk", [LocalResponseNorm.CPU_CHUNK, 7])  # 162 rows: one or 24 chunks
def test_gemm_lrn_equals_torch_lrn(size, chunk):
    reference = nn.LocalResponseNorm(size, LRN_ALPHA * 50, LRN_BETA, LRN_K)
    ours = LocalResponseNorm(size, LRN_ALPHA * 50, LRN_BETA, LRN_K)
    ours.CPU_CHUNK = chunk
    x = (torch.randn(2, 64, 9, 9) * 30).requires_grad_()
    for memory_format in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=memory_format)
        assert torch.allclose(ours(y), reference(y), rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # the inference form writes the chunks in place
            assert torch.allclose(ours(y), reference(y), rtol=1e-5, atol=1e-6)
    assert (reference(x) - x).abs().max() > 1.0  # large enough input to be normalised
    g1, = torch.autograd.grad(ours(x).square().sum(), x)
    g2, = torch.autograd.grad(reference(x).square().sum(), x)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-5)
    # Under bf16 autocast the normaliser stays fp32: the layer does not round away.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        small = torch.randn(1, 64, 4, 4) * 3
        assert torch.allclose(ours(small), reference(small), rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_outputs_equal_the_model(name):
    config = CONFIGS[name]
    model = _trained_like(config)
    fast = optimize_for_inference(model)
    x = torch.randn(3, config.in_chans, config.image_size, config.image_size)
    with torch.no_grad():
        ref, got = model(x), fast(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert not any(isinstance(m, nn.BatchNorm2d | nn.Dropout) for m in fast.modules())
    if config.module == "reduced":
        assert sum(isinstance(m, FusedInception) for m in fast.modules()) == 9
    assert model.aux and model.layers["conv1"].conv.weight.is_contiguous()  # untouched


@pytest.mark.parametrize("name", ["paper", "small-bn"])
def test_bf16_outputs_within_bf16_tolerance(name):
    config = CONFIGS[name]
    model = _trained_like(config)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    x = torch.randn(32, config.in_chans, config.image_size, config.image_size)
    with torch.no_grad():
        ref, got = model(x), fast(x)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa; errors compound over 22 layers (measured: 0.7% of the
    # largest logit for the paper variant, 1.2% for the small BN model).
    err = (got - ref).abs().max()
    assert err <= 0.03 * ref.abs().max()
    # Every image whose fp32 top-2 margin exceeds twice that error keeps its class; a random
    # model's 1000 logits are close together, so only those images can be asked to.
    top2 = ref.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * err
    assert clear.sum() >= 4
    assert torch.equal(got.argmax(1)[clear], ref.argmax(1)[clear])


@pytest.mark.parametrize("name", ["paper", "small-bn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gpu_arrangement_equals_the_model(name, dtype):
    """The form built for a GPU (`device="cuda"`, here run on the CPU): BN folded, dropout and
    aux heads gone, none of the CPU rewrites, the same outputs."""
    config = CONFIGS[name]
    model = _trained_like(config)
    gpu_form = optimize_for_inference(model, dtype=dtype, device="cuda")
    cpu_form = optimize_for_inference(model, dtype=dtype)
    assert gpu_form.stem_chunk is None and cpu_form.stem_chunk == 2
    assert not any(isinstance(m, FusedInception | MaxPool3x3 | nn.BatchNorm2d | nn.Dropout)
                   for m in gpu_form.modules())
    if config.module == "reduced":
        assert any(isinstance(m, FusedInception) for m in cpu_form.modules())
    x = torch.randn(3, config.in_chans, config.image_size, config.image_size)
    with torch.no_grad():
        ref, got = model(x), gpu_form(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    assert (got - ref).abs().max() <= tolerance * ref.abs().max()


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        optimize_for_inference(googlenet(image_size=80), dtype=torch.float16)


def test_lrn_exports_with_a_dynamic_batch():
    """The CPU chunking is off under tracing: a chunk count would fix the batch size."""
    lrn = LocalResponseNorm(LRN_SIZE, LRN_ALPHA * 50, LRN_BETA, LRN_K)
    lrn.CPU_CHUNK = 7
    x = torch.randn(2, 16, 5, 5) * 30
    program = torch.export.export(lrn, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b")}})
    y = torch.randn(3, 16, 5, 5) * 30
    assert torch.allclose(program.module()(y), lrn(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ConvLRN.FORMS)
@pytest.mark.parametrize("beta", [LRN_BETA, 0.6])
def test_conv_lrn_equals_torch_lrn(beta, form):
    """Each runtime's form against `torch.nn.LocalResponseNorm` (Caffe's semantics: alpha
    divided by the window size)."""
    reference = nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA * 50, beta, LRN_K)
    ours = ConvLRN(LocalResponseNorm(LRN_SIZE, LRN_ALPHA * 50, beta, LRN_K), 48, form=form)
    x = torch.randn(2, 48, 9, 9) * 30
    assert (reference(x) - x).abs().max() > 1.0  # large enough input to be normalised
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("export", [True, "openvino"])
def test_export_graph_equals_the_model(export):
    model = _trained_like(CONFIGS["paper"])
    graph = optimize_for_inference(model, export=export)
    form = "onnxruntime" if export is True else export
    assert {m.form for m in graph.modules() if isinstance(m, ConvLRN)} == {form}
    # ONNX Runtime's layout has no blocked Split: the export keeps the 1x1 convolutions apart.
    assert sum(isinstance(m, ConvLRN) for m in graph.modules()) == 2
    assert not any(isinstance(m, FusedInception | LocalResponseNorm) for m in graph.modules())
    assert [m.window.in_channels for m in graph.modules() if isinstance(m, ConvLRN)] == [64, 192]
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        assert (graph(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()
    with pytest.raises(ValueError, match="export=True"):
        optimize_for_inference(model, dtype=torch.bfloat16, export=True)


@pytest.mark.slow
def test_bench_reports_every_path(capsys):
    from inception.cli import main

    assert main(["bench", "--batch-size", "2", "--image-size", "80", "--repeats", "1",
                 "--no-onnx", "--no-openvino", "--train", "--json", "--device", "cpu"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["rows"]}
    assert not [name for name in rows if "openvino" in name or "onnxruntime" in name]
    assert {"torchvision eager bf16 autocast channels_last",
            "paper variant optimize_for_inference bf16", "train torchvision fp32 NCHW",
            "train paper variant bf16 autocast channels_last"} <= rows.keys()
    assert report["peak_gflops"]["bf16"] > 0
    assert report["device"].startswith("CPU")
    # Each row's multiply-adds are its model's at 80 px (x3 for a training step), and its
    # fraction of the peak is 2 x multiply-adds x images/s over the peak of its dtype.
    from inception import GoogLeNetConfig, table1_cost

    paper = table1_cost(GoogLeNetConfig(image_size=80)).total_ops
    tv = table1_cost(GoogLeNetConfig.torchvision(image_size=80)).total_ops
    assert rows["paper variant optimize_for_inference bf16"]["macs"] == paper
    assert rows["torchvision eager bf16 autocast channels_last"]["macs"] == tv
    assert rows["train paper variant bf16 autocast channels_last"]["macs"] == 3 * paper
    for r in rows.values():
        assert r["img_s"] > 0
        peak = report["peak_gflops"][r["dtype"]]
        assert r["peak_fraction"] == pytest.approx(2 * r["macs"] * r["img_s"] / 1e9 / peak)


def test_chunked_lrn_gradcheck():
    """The hand-written backward of the CPU form, in float64, across chunk boundaries."""
    lrn = LocalResponseNorm(LRN_SIZE, LRN_ALPHA * 5000, LRN_BETA, LRN_K)
    lrn.CPU_CHUNK = 5
    x = (torch.randn(2, 9, 3, 2, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lrn, (x,))
    assert torch.autograd.gradcheck(lrn, (x.contiguous(memory_format=torch.channels_last),))


@pytest.mark.slow
def test_transform_input_survives_optimize_for_inference_and_onnx(tmp_path):
    """torchvision's `transform_input` re-normalisation (its pretrained weights need it) is kept
    by the inference form and by the ONNX export, and it changes the logits."""
    import onnx

    from inception import LoadedModel
    from inception.export import onnx_session, to_onnx_model
    from inception.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    config = GoogLeNetConfig.torchvision(image_size=64, transform_input=True, num_classes=7,
                                         aux_logits=False)
    model = _trained_like(config).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fast = optimize_for_inference(model)(x)
        without = googlenet(config.replace(transform_input=False))
        without.load_state_dict(model.state_dict())
        assert (without.eval()(x) - ref).abs().max() > 1e-2
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
    loaded = LoadedModel(model, {"crop": 64, "resize": 73, "mean": list(IMAGENET_MEAN),
                                 "std": list(IMAGENET_STD)}, list("abcdefg"), path=tmp_path)
    onnx.save(to_onnx_model(loaded), str(tmp_path / "m.onnx"))
    session = onnx_session(tmp_path / "m.onnx", threads=1)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("change", [{"pool_branch": False}, {"head": "fc"}])
def test_the_inference_form_of_the_ablated_models_gives_the_same_logits(change):
    cfg = GoogLeNetConfig(num_classes=10, in_chans=1, image_size=28, stem="small", width=0.25,
                          norm="bn", aux_logits=False, **change)
    torch.manual_seed(0)
    model = googlenet(cfg).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        got = optimize_for_inference(model, dtype=torch.float32)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
