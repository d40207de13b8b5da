import numpy as np
import pytest

from cartoon.data.builtin import builtin_items, builtin_photo_names, load_builtin_photo
from cartoon.errors import UsageError


@pytest.mark.parametrize("name", builtin_photo_names())
def test_every_bundled_photo_loads_as_colour(name):
    photo = load_builtin_photo(name)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
    assert min(photo.shape[:2]) >= 200
    assert photo.std(axis=(0, 1)).min() > 5 and np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 2


@pytest.mark.parametrize("domain", ["photo", "cartoon"])
def test_items_are_deterministic_and_sized(domain):
    first = list(builtin_items(domain, 5, 32, seed=3))
    again = list(builtin_items(domain, 5, 32, seed=3))
    other = list(builtin_items(domain, 5, 32, seed=4))
    assert len(first) == 5 and len({name for name, _ in first}) == 5
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for _, image in first)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, other))


def test_photo_crops_cycle_through_all_photos():
    names = [name.split("-crop")[0] for name, _ in builtin_items("photo", 2 * len(builtin_photo_names()), 16, 0)]
    assert set(names) == set(builtin_photo_names())


def test_synthetic_scene_has_flat_regions_and_dark_outlines():
    _, scene = next(builtin_items("cartoon", 1, 128, 0))
    assert len(np.unique(scene.reshape(-1, 3), axis=0)) < 200  # a small palette
    assert (scene.max(axis=2) < 60).mean() > 0.01  # dark outline pixels


def test_unknown_domain():
    with pytest.raises(UsageError, match="domain"):
        list(builtin_items("painting", 1, 16, 0))
