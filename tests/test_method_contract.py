"""What every registered method must do; a new method is checked here without new tests."""

import copy

import pytest
import torch

from cartoon.methods import (
    available_methods,
    load_run_params,
    method_params,
)
from cartoon.checkpoints import FiniteGuard
from cartoon.methods.base import NonFiniteLoss
from cartoon.vgg import RandomWeightsWarning, load_vgg
from tests.conftest import write_params

METHODS = list(available_methods())


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    """The tiny test params of every method (tests/conftest.py)."""
    return load_run_params(write_params(tmp_path_factory.mktemp("params") / "params.yaml"))


@pytest.fixture(scope="module")
def features(params):
    with pytest.warns(RandomWeightsWarning):  # the methods' own layer (conv4_4), not the default profile's random_layer
        return load_vgg(params.vgg.model_copy(update={"random_layer": None}))


@pytest.fixture
def make(params, features):
    return lambda name, pretrain_lr=None: _make(params, features, name, pretrain_lr)


def _make(all_params, features, name, pretrain_lr):
    params = method_params(all_params, name)
    if pretrain_lr is not None:
        params = params.model_copy(update={"pretrain": params.pretrain.model_copy(update={"lr": pretrain_lr})})
    torch.manual_seed(0)
    method = available_methods()[name](params, features, torch.device("cpu"))
    method.load_pretrained(all_params, "train")  # as the training loop builds it
    return method


def batch_for(method, phase, size=16, n=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(n, 3, size, size, generator=generator) * 2 - 1 for name in method.sets[phase]}


SKIPPABLE = [name for name in METHODS if "input_skip" in available_methods()[name].Params().generator.model_fields]


@pytest.mark.parametrize("name", SKIPPABLE)
def test_input_skip_starts_from_the_identity_and_adds_no_parameter(name, params):
    """``input_skip`` (a documented non-paper key) makes the generator predict a change to the
    photo, zero at the start: the photo itself, with the paper's parameter count."""
    method_class = available_methods()[name]
    config = method_params(params, name)
    assert method_class.Params().generator.input_skip is False  # the paper's generator by default
    skip = config.model_copy(update={"generator": config.generator.model_copy(update={"input_skip": True})})
    plain = config.model_copy(update={"generator": config.generator.model_copy(update={"input_skip": False})})
    torch.manual_seed(0)
    generator = method_class.build_generator(skip)
    assert sum(p.numel() for p in generator.parameters()) == sum(p.numel() for p in method_class.build_generator(plain).parameters())
    x = torch.rand(2, 3, 16, 24) * 1.9 - 0.95
    with torch.no_grad():
        torch.testing.assert_close(generator(x), x)  # a zero change: the photo itself
        for parameter in generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
        changed = generator(x)
    assert (changed - x).abs().max() > 1e-3 and changed.abs().max() <= 1


@pytest.mark.parametrize("name", METHODS)
def test_generator_keeps_any_multiple_size_and_range(name, make):
    method = make(name)
    m = method.size_multiple
    x = torch.rand(1, 3, 5 * m, 7 * m) * 2 - 1
    with torch.no_grad():
        y = method.generator(x)
    assert y.shape == x.shape and y.abs().max() <= 1


@pytest.mark.parametrize("name", METHODS)
def test_pretrain_steps_decrease_content_loss(name, make):
    method = make(name, pretrain_lr=1e-3)
    method.setup("pretrain", epochs=1, steps_per_epoch=20)
    batch = batch_for(method, "pretrain", n=4)
    with torch.no_grad():
        before = method.content_loss(method.generator(batch["photo"]), batch["photo"]).item()
    for _ in range(15):
        losses = method.step("pretrain", batch)
    with torch.no_grad():
        after = method.content_loss(method.generator(batch["photo"]), batch["photo"]).item()
    assert losses and after < 0.7 * before  # whatever a method optimises, the content is learnt


@pytest.mark.parametrize("name", METHODS)
def test_train_step_updates_every_network_and_reports_finite_terms(name, make):
    method = make(name)
    method.setup("train", epochs=2, steps_per_epoch=1)
    assert "generator" in method.networks and len(method.networks) >= 2
    before = {net: [p.clone() for p in module.parameters()] for net, module in method.networks.items()}
    losses = method.step("train", batch_for(method, "train"))
    assert losses and all(v.ndim == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())
    for net, module in method.networks.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[net], module.parameters())), f"{net} not updated"


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_restores_networks_and_optimisers(name, make):
    method = make(name)
    method.setup("train", epochs=2, steps_per_epoch=1)
    method.step("train", batch_for(method, "train"))
    state = copy.deepcopy(method.state_dict())  # as saved to disk: no tensor shared with the live method
    other = make(name)
    other.setup("train", epochs=2, steps_per_epoch=1)
    other.load_state_dict(state)
    for net in method.networks:
        for (ka, a), (kb, b) in zip(method.networks[net].state_dict().items(), other.networks[net].state_dict().items()):
            assert ka == kb and torch.equal(a, b)  # buffers (e.g. spectral-norm vectors) included
    for opt in method.optimizers:
        assert other.optimizers[opt].state_dict()["state"].keys() == state[f"opt.{opt}"]["state"].keys()
    # The next step is the same from the original and from the restored copy.
    torch.manual_seed(5)
    a = method.step("train", batch_for(method, "train", seed=1))
    torch.manual_seed(5)
    b = other.step("train", batch_for(method, "train", seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", METHODS)
def test_non_finite_loss_is_reported_by_the_guard_not_waited_for_in_the_step(name, make):
    method = make(name)
    method.setup("pretrain", epochs=1, steps_per_epoch=1)
    guard = FiniteGuard()
    guard.watch(method.step("pretrain", {"photo": torch.full((1, 3, 16, 16), float("nan"))}))
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        guard.verify(1)
