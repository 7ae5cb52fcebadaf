"""`inception.train.checkpoint.TrainState`: one state_dict / load_state_dict pair."""

import io

import torch

from inception.model import GoogLeNet
from inception.recipes import get_recipe
from inception.train.checkpoint import TrainState
from inception.train.engine import Position
from inception.train.optim import make_average, make_optimizer, make_scheduler


def _state(seed: int) -> TrainState:
    cfg = get_recipe("fashion-mnist").replace(width=0.25)
    torch.manual_seed(seed)
    model = GoogLeNet(cfg.model)
    optimizer = make_optimizer(model, cfg)
    return TrainState(model, optimizer, make_scheduler(optimizer, cfg, 10),
                      make_average(model, cfg))


def _step(state: TrainState) -> None:
    torch.manual_seed(5)  # the same batch and dropout masks for both states
    state.optimizer.zero_grad(set_to_none=True)
    out = state.model.forward_aux(torch.randn(4, 1, 28, 28))
    (out.logits.sum() + sum(a.sum() for a in out.aux)).backward()
    state.optimizer.step()
    state.scheduler.step()
    state.average.update_parameters(state.model)


def _through_a_file(state: dict) -> dict:
    """As a checkpoint travels: saved and loaded with `weights_only=True` (a state dict in
    memory shares its tensors, e.g. the momentum buffers, with the live optimizer)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_state_loaded_from_its_state_dict_is_the_same_state():
    a = _state(0)
    _step(a)
    a.position = Position(epoch=1, batch=3, step=13, loss_sum=2.5, seen=96, lr=0.1)
    a.metrics = [{"epoch": 1, "wall_s": 5.0}]
    a.rng, a.data_rng = torch.get_rng_state(), torch.Generator().manual_seed(3).get_state()
    b = _state(1)
    b.load_state_dict(_through_a_file(a.state_dict()))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["position"] == sb["position"] and sa["metrics"] == sb["metrics"]
    for key in ("model", "average"):
        assert all(torch.equal(sa[key][k], sb[key][k]) for k in sa[key])
    assert sa["scheduler"] == sb["scheduler"]
    assert torch.equal(sa["rng"], sb["rng"]) and torch.equal(sa["data_rng"], sb["data_rng"])
    _step(a)
    _step(b)  # and they go on identically: momentum buffers and schedule restored
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(),
                                                 strict=True))


def test_a_format_1_checkpoint_resumes_at_its_epoch_boundary():
    a = _state(0)
    old = {k: v for k, v in a.state_dict().items() if k not in ("position", "rng", "gpu_rng",
                                                                  "data_rng")}
    old.update(epoch=2, step=20, metrics=[{"epoch": 2, "wall_s": 7.5}])
    b = _state(1)
    b.load_state_dict(_through_a_file(old))
    assert b.position == Position(epoch=2, step=20, wall_s=7.5)
