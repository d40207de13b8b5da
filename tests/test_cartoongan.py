import json

import pytest
import torch

from cartoon.artifacts import CONFIG_FILE, load_generator, save_generator
from cartoon.errors import RuntimeFailure
from cartoon.methods import available_methods, get_method
from cartoon.methods.base import count_parameters
from cartoon.methods.cartoongan import CartoonGAN, CartoonGANParams, Discriminator, Generator
from cartoon.params import VggParams
from cartoon.vgg import RandomWeightsWarning, load_vgg


def test_registry_finds_cartoongan():
    assert available_methods()["cartoongan"] is CartoonGAN
    assert get_method("cartoongan") is CartoonGAN


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_paper_generator_parameter_count(upsample):
    assert count_parameters(Generator(64, 8, upsample)) == 11_120_195


# Paper width: 9*256*256 + 256 = 590,080 per 3x3 block convolution; the rest of the network
# (stem, down- and up-sampling, output conv) has 11,120,195 - 16 x 590,080 = 1,678,915.
@pytest.mark.parametrize(("n_blocks", "block_convs", "count"), [(8, 2, 11_120_195), (10, 2, 13_480_515), (10, 3, 19_381_315)])
def test_block_variant_parameter_counts(n_blocks, block_convs, count):
    assert count == 1_678_915 + n_blocks * block_convs * 590_080
    params = CartoonGANParams.model_validate({"generator": {"n_blocks": n_blocks, "block_convs": block_convs}})
    assert count_parameters(CartoonGAN.build_generator(params)) == count


def test_three_conv_generator_saves_and_loads(tmp_path):
    params = CartoonGANParams.model_validate({"generator": {"width": 4, "n_blocks": 2, "block_convs": 3}})
    generator = CartoonGAN.build_generator(params)
    config = {"method": "cartoongan", "params": params.model_dump(mode="json"), "size_multiple": CartoonGAN.size_multiple}
    save_generator(tmp_path, generator, config)  # the config as training writes it
    loaded, saved = load_generator(tmp_path)
    assert saved["params"]["generator"]["block_convs"] == 3
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), generator.eval()(x))
    saved["params"]["generator"]["block_convs"] = 2
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(RuntimeFailure, match="does not fit"):  # the recorded value decides the shape
        load_generator(tmp_path)


def test_input_skip_keeps_the_paper_parameter_count():  # its identity start: tests/test_method_contract.py
    assert count_parameters(Generator(64, 8, "resize", input_skip=True)) == 11_120_195


def test_paper_discriminator_parameter_count():
    assert count_parameters(Discriminator(32)) == 1_128_385


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_shapes(upsample):
    generator = Generator(8, 1, upsample)
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    y = generator(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1
    assert Discriminator(8)(x).shape == (2, 1, 9, 11)  # patch map at 1/4 of the input


@pytest.fixture
def method():
    torch.manual_seed(0)
    params = CartoonGANParams.model_validate(
        {"generator": {"width": 8, "n_blocks": 1}, "train": {"disc_width": 8}, "pretrain": {"lr": 1e-3}}
    )
    with pytest.warns(RandomWeightsWarning):
        features = load_vgg(VggParams(allow_random=True), CartoonGAN.content_layer)
    return CartoonGAN(params, features, torch.device("cpu"))



def test_train_step_reports_every_term_and_updates_both_networks(method):
    method.setup("train", epochs=4, steps_per_epoch=2)
    assert set(method.networks) == {"generator", "discriminator"}
    g_before = [p.clone() for p in method.generator.parameters()]
    d_before = [p.clone() for p in method.discriminator.parameters()]
    batch = {name: torch.rand(2, 3, 32, 32) * 2 - 1 for name in ("photo", "cartoon", "smooth")}
    losses = method.step("train", batch)
    assert set(losses) == {"d_real", "d_fake", "d_edge", "d_total", "g_adv", "content", "g_total"}
    expected_g = losses["g_adv"] + method.params.train.content_weight * losses["content"]
    assert torch.isclose(losses["g_total"], expected_g)
    assert torch.isclose(losses["d_total"], losses["d_real"] + losses["d_fake"] + losses["d_edge"])
    assert any(not torch.equal(a, b) for a, b in zip(g_before, method.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))


def test_lr_decays_at_paper_fractions(method):
    method.setup("train", epochs=4, steps_per_epoch=1)
    lrs = []
    for _ in range(4):
        lrs.append(method.optimizers["generator"].param_groups[0]["lr"])
        method.end_epoch()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-6])
