"""The embedded default data set: nothing downloaded, nothing stored in the repository.

The bundled photographs are the natural photographs that installed dependencies ship:
scikit-image (``astronaut``, ``chelsea``, ``coffee``, ``rocket``, ``stereo_motorcycle`` left
view), scikit-learn (``china``, ``flower`` from ``load_sample_images``) and matplotlib
(``grace_hopper.jpg`` sample data). They are split between the domains, so the cartoon set
never shows a photo of the photo set:

- photos: random crops of ``PHOTO_SOURCES``;
- cartoons (``style: celshade``, the default): random crops of the OTHER bundled photographs,
  ``CARTOON_SOURCES``, rendered by ``cartoon.data.celshade``; or (``style: scenes``) the
  synthetic cel-shaded landscapes of ``cartoon.data.synthetic``, one template with random
  objects (kept for tests and comparison: a GAN copies its layout).

Each item is named ``<photo>#crop<index>``: the part before ``#`` names the source photograph,
which ``resize`` keeps on one side of the train/test split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from cartoon.data.celshade import cel_shade
from cartoon.data.synthetic import cel_shaded_scene
from cartoon.errors import UsageError

MIN_CROP_SCALE = 0.35  # crops cover 35-100 % of the short side, so crops of one photo differ


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(matplotlib.image.imread(handle, format="jpg"))


_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
}


PHOTO_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "grace_hopper")
CARTOON_SOURCES = ("china", "flower", "motorcycle")
CARTOON_STYLES = ("celshade", "scenes")


def builtin_photo_names() -> list[str]:
    return list(_PHOTOS)


@functools.lru_cache(maxsize=None)
def load_builtin_photo(name: str) -> np.ndarray:
    """One bundled photograph as HxWx3 uint8 RGB."""
    if name not in _PHOTOS:
        raise UsageError(f"unknown builtin photo {name!r} (known: {', '.join(_PHOTOS)})")
    image = np.asarray(_PHOTOS[name]())
    if image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def random_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A square crop (random scale, position and mirror) resized to ``size`` x ``size``."""
    height, width = photo.shape[:2]
    side = int(round(min(height, width) * rng.uniform(MIN_CROP_SCALE, 1.0)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interpolation)


def builtin_items(
    domain: str, count: int, size: int, seed: int, photos: tuple[str, ...] | None = None, style: str = "celshade"
) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` (name, HxWx3 uint8) items of a domain, the same for the same arguments.

    ``photos`` picks the bundled photographs to crop (default ``PHOTO_SOURCES`` for photos,
    ``CARTOON_SOURCES`` for cartoons), taken in turn; ``style`` is how cartoons are made.
    """
    rng = np.random.default_rng([seed, {"photo": 0, "cartoon": 1}.get(domain, 2)])
    if domain not in ("photo", "cartoon"):
        raise UsageError(f"unknown builtin domain {domain!r} (use photo or cartoon)")
    if style not in CARTOON_STYLES:
        raise UsageError(f"unknown builtin style {style!r} (use {' or '.join(CARTOON_STYLES)})")
    if domain == "cartoon" and style == "scenes":
        for index in range(count):
            yield f"scene-{index:04d}", cel_shaded_scene(rng, size)
        return
    names = list(photos or (PHOTO_SOURCES if domain == "photo" else CARTOON_SOURCES))
    for index in range(count):
        name = names[index % len(names)]
        crop = random_crop(load_builtin_photo(name), rng, size)
        if domain == "photo":
            yield f"{name}#crop{index:03d}", crop
        else:
            yield f"celshade/{name}#crop{index:03d}", cel_shade(crop)
