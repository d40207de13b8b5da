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
  objects (kept for tests and comparison: a GAN copies its layout);
- face photos: ``FACE_SOURCES``, the bundled photographs that show a face (astronaut,
  camera, grace_hopper) with mild augmentation (crop, rotation, mirror, exposure), and the 100
  small grey faces of scikit-image's ``lfw_subset``, enlarged; the resize stage detects and
  aligns the faces;
- face cartoons: cartoon faces drawn by ``cartoon.data.faces.cartoon_face``.

Any unpaired pair of domains: ``style: clear`` gives plain crops in the photo or cartoon domain,
``style: haze`` hazy crops (``cartoon.data.haze``, ``haze: thin`` or ``dense``), so hazy photos
and clear "cartoons" of other photographs make a dehazing set. The ``reference`` domain holds
the expected output of photos for paired evaluation: a reference source with the photo
source's seed, size and photos crops the very same squares (the photo domain's random stream)
and names them as the photo source does, so each reference carries the origin of its photo;
its style says what it is (``clear``: a hazy photo's clear original).

Each item is named ``<photo>#crop<index>``: the part before ``#`` names the source photograph,
which ``resize`` keeps on one side of the train/test split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from cartoon.data.celshade import cel_shade
from cartoon.data.faces import cartoon_face
from cartoon.data.haze import SETTINGS as HAZE_SETTINGS
from cartoon.data.haze import apply_haze, draw_haze
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
    "camera": _skimage("camera"),
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
}


PHOTO_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "grace_hopper")
CARTOON_SOURCES = ("china", "flower", "motorcycle")
FACE_SOURCES = ("astronaut", "camera", "grace_hopper", "lfw")  # "lfw": one of lfw_subset's faces per item
LFW_FACES = 100
DOMAINS = ("photo", "cartoon", "face_photo", "face_cartoon", "reference")  # the index seeds each domain's stream
#: The styles each domain can be made in, its default first (face domains have one way each).
STYLES = {"photo": ("clear", "haze"), "cartoon": ("celshade", "scenes", "clear", "haze"), "reference": ("clear", "haze"),
          "face_photo": (), "face_cartoon": ()}  # fmt: skip
HAZE_STREAM = 1000  # the haze of item i is drawn from default_rng([seed, HAZE_STREAM, i]): the crops' streams stay as they were


def builtin_photo_names() -> list[str]:
    return [*_PHOTOS, "lfw"]


@functools.lru_cache(maxsize=None)
def load_builtin_photo(name: str) -> np.ndarray:
    """One bundled photograph as HxWx3 uint8 RGB."""
    if name not in _PHOTOS:
        raise UsageError(f"unknown builtin photo {name!r} (known: {', '.join(_PHOTOS)})")
    return _rgb_uint8(np.asarray(_PHOTOS[name]()))


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 of a bundled image in [0, 1] or [0, 255], grey, RGB or RGBA."""
    if image.dtype != np.uint8:
        image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


@functools.lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """scikit-image's ``lfw_subset``: its first 100 images are 25x25 grey faces (the rest are not faces)."""
    import skimage.data

    return skimage.data.lfw_subset()[:LFW_FACES]


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


def augmented_face_photo(name: str, rng: np.random.Generator, size: int) -> tuple[str, np.ndarray]:
    """A face photograph, mildly changed so the face survives: for a bundled photograph a crop of
    75-100 % of its short side, rotated up to 10 degrees, mirrored half the time, exposure
    scaled by 0.8-1.2; for ``lfw`` one of its 100 faces, enlarged 4x (MTCNN needs more than
    25 px) and mirrored half the time. Returns the item's source (the photograph, or the lfw
    face) and the square image, shrunk to ``size`` when larger."""
    if name == "lfw":
        index = int(rng.integers(LFW_FACES))
        source, image = f"lfw{index:03d}", cv2.resize(_rgb_uint8(_lfw_faces()[index]), (100, 100), interpolation=cv2.INTER_CUBIC)
    else:
        photo = load_builtin_photo(name)
        height, width = photo.shape[:2]
        side = int(round(min(height, width) * rng.uniform(0.75, 1.0)))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        rotation = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-10, 10)), 1.0)
        image = cv2.warpAffine(np.ascontiguousarray(photo[top : top + side, left : left + side]), rotation, (side, side),
                               borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
        source, image = name, np.clip(image.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if image.shape[0] > size:
        image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)
    return source, np.ascontiguousarray(image)


def builtin_items(
    domain: str, count: int, size: int, seed: int, photos: tuple[str, ...] | None = None, style: str | None = None,
    haze: str = "thin",
) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` (name, HxWx3 uint8) items of a domain, the same for the same arguments.

    ``photos`` picks the bundled photographs to crop (default ``PHOTO_SOURCES`` for photos and
    references, ``CARTOON_SOURCES`` for cartoons, ``FACE_SOURCES`` for face photos), taken in
    turn; ``style`` is how the crops are rendered (``STYLES``; None: the domain's default) and
    ``haze`` the setting of ``style="haze"``. References crop exactly what photos of the same
    seed, size and photos crop, under the same names, whatever either's style.
    """
    if domain not in DOMAINS:
        raise UsageError(f"unknown builtin domain {domain!r} (use {', '.join(DOMAINS)})")
    styles = STYLES[domain]
    style = style or (styles[0] if styles else None)
    if style is not None and style not in styles:
        allowed = f"use {' or '.join(styles)}" if styles else "this domain takes no style"
        raise UsageError(f"unknown builtin style {style!r} for the {domain} domain ({allowed})")
    if haze not in HAZE_SETTINGS:
        raise UsageError(f"unknown haze setting {haze!r} (use {' or '.join(HAZE_SETTINGS)})")
    rng = np.random.default_rng([seed, DOMAINS.index("photo" if domain == "reference" else domain)])
    if domain == "face_cartoon":
        for index in range(count):
            yield f"cartoon-face-{index:04d}", cartoon_face(rng, size)[0]
        return
    if domain == "cartoon" and style == "scenes":
        for index in range(count):
            yield f"scene-{index:04d}", cel_shaded_scene(rng, size)
        return
    default = {"photo": PHOTO_SOURCES, "reference": PHOTO_SOURCES, "cartoon": CARTOON_SOURCES, "face_photo": FACE_SOURCES}[domain]
    names = list(photos or default)
    for index in range(count):
        name = names[index % len(names)]
        if domain == "face_photo":
            source, image = augmented_face_photo(name, rng, size)
            yield f"{source}#face{index:03d}", image  # the same source name as the photo domain's crops
            continue
        if name == "lfw":
            raise UsageError("lfw (lfw_subset's faces) is a face_photo source only")
        crop = random_crop(load_builtin_photo(name), rng, size)
        if style == "haze":
            crop = apply_haze(crop, draw_haze(np.random.default_rng([seed, HAZE_STREAM, index]), size, size, haze))
        elif style == "celshade":
            crop = cel_shade(crop)
        prefix = "" if domain in ("photo", "reference") else f"{style}/"  # references are named as their photos
        yield f"{prefix}{name}#crop{index:03d}", crop
