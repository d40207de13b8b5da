import numpy as np
import pytest

from cartoon.data.builtin import (
    CARTOON_SOURCES,
    PHOTO_SOURCES,
    builtin_items,
    builtin_photo_names,
    load_builtin_photo,
    random_crop,
)
from cartoon.data.celshade import cel_shade
from cartoon.errors import UsageError
from cartoon.metrics import colour_count, flatness, luminance_ssim


GREY_PHOTOS = ("camera",)  # a face source only: the scenery domains need colour


@pytest.mark.parametrize("name", [name for name in builtin_photo_names() if name != "lfw"])
def test_every_bundled_photo_loads_as_rgb(name):
    photo = load_builtin_photo(name)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
    assert min(photo.shape[:2]) >= 200
    assert photo.std(axis=(0, 1)).min() > 5
    colourful = np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 2
    assert colourful == (name not in GREY_PHOTOS)


@pytest.mark.parametrize("domain", ["photo", "cartoon", "face_photo", "face_cartoon"])
def test_items_are_deterministic_and_sized(domain):
    first = list(builtin_items(domain, 5, 32, seed=3))
    again = list(builtin_items(domain, 5, 32, seed=3))
    other = list(builtin_items(domain, 5, 32, seed=4))
    assert len(first) == 5 and len({name for name, _ in first}) == 5
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for _, image in first)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, other))


def test_domains_crop_disjoint_bundled_photos():
    assert set(PHOTO_SOURCES) | set(CARTOON_SOURCES) <= set(builtin_photo_names())
    assert not set(PHOTO_SOURCES) & set(CARTOON_SOURCES)  # no cartoon shows a photo of the photo set
    photos = [name.split("#")[0] for name, _ in builtin_items("photo", 2 * len(PHOTO_SOURCES), 16, 0)]
    cartoons = [name.split("#")[0] for name, _ in builtin_items("cartoon", 2 * len(CARTOON_SOURCES), 16, 0)]
    assert set(photos) == set(PHOTO_SOURCES)
    assert set(cartoons) == {f"celshade/{name}" for name in CARTOON_SOURCES}
    chosen = [name.split("#")[0] for name, _ in builtin_items("photo", 4, 16, 0, photos=("china",))]
    assert chosen == ["china"] * 4
    faces = [name.split("#")[0] for name, _ in builtin_items("face_photo", 8, 16, 0)]
    assert faces[:3] == ["astronaut", "camera", "grace_hopper"] and faces[3].startswith("lfw")  # named by source photograph
    with pytest.raises(UsageError, match="face_photo source only"):
        list(builtin_items("photo", 1, 16, 0, photos=("lfw",)))


@pytest.mark.parametrize("name", ["coffee", "chelsea", "china"])
def test_cel_shading_flattens_keeps_luminance_and_inks_outlines(name):
    photo = random_crop(load_builtin_photo(name), np.random.default_rng(0), 128)
    cartoon = cel_shade(photo)
    assert cartoon.shape == photo.shape and cartoon.dtype == np.uint8
    assert np.array_equal(cartoon, cel_shade(photo))  # deterministic
    assert colour_count(cartoon) < 0.7 * colour_count(photo)
    assert flatness(cartoon) > flatness(photo) + 0.05
    assert (cartoon.max(axis=2) < 50).mean() > (photo.max(axis=2) < 50).mean()  # ink lines
    assert luminance_ssim(photo, cartoon) > 0.5  # still the same picture


def test_synthetic_scene_has_flat_regions_and_dark_outlines():
    _, scene = next(builtin_items("cartoon", 1, 128, 0, style="scenes"))
    assert len(np.unique(scene.reshape(-1, 3), axis=0)) < 200  # a small palette
    assert (scene.max(axis=2) < 60).mean() > 0.01  # dark outline pixels


def test_unknown_domain_and_style():
    with pytest.raises(UsageError, match="domain"):
        list(builtin_items("painting", 1, 16, 0))
    with pytest.raises(UsageError, match="style"):
        list(builtin_items("cartoon", 1, 16, 0, style="oil"))
