"""The palette inference step: exact few colours, deterministic k-means, one palette per whole
image when tiled, ONNX parity, and the key in every method's generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cartoon.artifacts import load_cartoonizer, save_generator
from cartoon.inference import cartoonize
from cartoon.methods import get_method
from cartoon.onnx_export import export_onnx
from cartoon.palette import Palette, palette_of
from cartoon.tiling import TiledCartoonizer, TileSettings
from tests.test_cartoonize import photo


def colours_of(images: torch.Tensor) -> list[set[tuple[float, ...]]]:
    """The distinct colours of each N,3,H,W image."""
    return [set(map(tuple, image.reshape(3, -1).T.tolist())) for image in images]


def blocks(colours: list[tuple[float, float, float]], side: int = 16) -> torch.Tensor:
    """A 1,3,side,side*len image of flat vertical bands, one per colour."""
    return torch.cat([torch.tensor(c).view(1, 3, 1, 1).expand(1, 3, side, side) for c in colours], dim=3)


def test_output_has_at_most_k_colours_each_a_centre():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 24, 20) * 2 - 1
    output = Palette(5)(images)
    pixels = images.reshape(3, 3, -1).transpose(1, 2)
    for found, centres in zip(colours_of(output), palette_of(pixels, 5)):
        assert 2 <= len(found) <= 5
        assert found <= set(map(tuple, centres.tolist()))


def test_an_image_of_k_flat_colours_comes_back_unchanged():
    image = blocks([(-0.8, -0.6, 0.9), (0.1, 0.7, -0.2), (0.9, 0.9, 0.9), (0.5, -0.9, -0.9)])
    assert torch.allclose(Palette(4)(image), image, atol=1e-6)  # each colour its own centre (float means)


def test_a_large_image_is_fitted_on_a_grid_and_still_exact():
    image = torch.nn.functional.interpolate(blocks([(-0.8, -0.6, 0.9), (0.1, 0.7, -0.2), (0.9, 0.9, 0.9)], side=4), size=(300, 420))
    assert torch.allclose(Palette(3)(image), image, atol=1e-4)  # 126,000 pixels, fitted on every 3rd row and column (fp32 means)


def test_deterministic_and_autocast_safe():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = Palette(6)(images)
    assert torch.equal(Palette(6)(images), Palette(6)(images.clone()))
    assert torch.equal(under_autocast, Palette(6)(images))


def test_recorded_palette_is_applied_to_other_images():
    layer = Palette(3)
    layer.mode = "record"
    first = layer(blocks([(-1.0, -1.0, -1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]))
    layer.mode = "apply"
    other = layer(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert colours_of(other)[0] <= colours_of(first)[0]


def test_an_image_with_fewer_pixels_than_colours_keeps_its_own():
    image = torch.rand(1, 3, 4, 4) * 2 - 1
    assert torch.allclose(Palette(32)(image), image, atol=1e-6)  # 16 pixels, 32 slots: each pixel its own centre


def test_needs_two_colours():
    with pytest.raises(ValueError, match="at least 2"):
        Palette(1)


@pytest.mark.parametrize("name", ["cartoongan", "animeganv2", "whitebox"])
def test_every_method_offers_the_key_and_off_is_the_paper(name):
    method = get_method(name)
    tiny = {"cartoongan": {"width": 4, "n_blocks": 1}, "animeganv2": {"width": 4, "n_blocks": 1}, "whitebox": {"width": 4, "n_blocks": 1}}[name]
    plain = method.build_generator(method.Params.model_validate({"generator": tiny}))
    quantised = method.build_generator(method.Params.model_validate({"generator": {**tiny, "palette_colours": 4}}))
    assert not any(isinstance(m, Palette) for m in plain.modules())
    assert [m.colours for m in quantised.modules() if isinstance(m, Palette)] == [4]
    assert plain.state_dict().keys() == quantised.state_dict().keys()  # no weights: old files load either way
    quantised.load_state_dict(plain.state_dict())
    photo = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(quantised(photo), plain(photo))  # not in the training graph: the generator is unchanged
        assert len(colours_of(method.infer(quantised, photo))[0]) <= 4  # inference ends in it (White-box: after its filter)
        assert len(colours_of(method.infer(plain, photo))[0]) > 4


def _saved(tmp_path, palette_colours: int = 6):
    method = get_method("cartoongan")
    params = method.Params.model_validate({"generator": {"width": 4, "n_blocks": 1, "upsample": "resize", "palette_colours": palette_colours}})
    torch.manual_seed(0)
    config = {"method": "cartoongan", "params": params.model_dump(mode="json"), "size_multiple": method.size_multiple}
    save_generator(tmp_path / "gen", method.build_generator(params), config)
    return load_cartoonizer(tmp_path / "gen")


def test_tiles_share_the_whole_image_palette(tmp_path):
    model, config = _saved(tmp_path)
    image = photo(96, 96)  # four 48 px tiles, no overlap: no blended pixels
    whole = cartoonize(model, image, config["size_multiple"])
    tiled = TiledCartoonizer(model, config["size_multiple"], TileSettings(tile=48, overlap=0, stats_side=96))(image)
    colours = lambda rgb: set(map(tuple, rgb.reshape(-1, 3).tolist()))  # noqa: E731
    assert len(colours(whole)) <= 6 and len(colours(tiled)) <= 6  # one palette: no tile adds its own colours
    assert np.abs(tiled.astype(int) - whole).mean() < 8
    per_tile = np.concatenate([cartoonize(model, image[top : top + 48], config["size_multiple"]) for top in (0, 48)])
    assert len(colours(per_tile)) > 6  # without the shared palette each tile would pick its own


def test_onnx_export_allows_only_palette_ties(tmp_path):
    model, config = _saved(tmp_path)
    report = export_onnx(model, config, tmp_path / "model.onnx")
    assert report["share_beyond_tolerance"] <= 0.05 and (tmp_path / "model.onnx").is_file()
    assert all("share_beyond_tolerance" in row for row in report["sizes"])


def test_whitebox_applies_the_palette_after_its_guided_filter():
    from cartoon.guided_filter import guided_filter
    from cartoon.methods.whitebox import Generator, WhiteBox

    torch.manual_seed(0)
    generator = Generator(4, 1, palette_colours=5).eval()
    photo = torch.rand(2, 3, 32, 36) * 2 - 1
    with torch.no_grad():
        raw = generator(photo)
        torch.testing.assert_close(WhiteBox.infer(generator, photo), Palette(5)(guided_filter(photo, raw, r=1, eps=5e-3)))
