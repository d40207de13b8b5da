"""The batch source: which images each global step of a phase trains on.

Batches depend on (seed, epoch, step) alone, never on what ran before, so a resumed run draws
exactly the batches the killed run would have. Image sets stay memory-mapped; a batch reads
only its rows. With faces (White-box and the face method), every ``face_every``-th step draws a face batch,
which also carries ``face_boxes``: where the (aligned) face is in each image.

With W processes (data-parallel training), the epoch's shuffle is the same on every rank and
rank r takes its positions r, r + W, r + 2W, ...: the ranks' shares are disjoint, a step's W
batches together are the batch one process would draw with W * batch_size, and a resume on the
same W redraws them exactly. Steps per epoch count the per-rank share: ceil(N / (W * batch_size)).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cartoon.data.faces import FACE_BOX
from cartoon.data.store import Images, open_images, row_chunks
from cartoon.errors import RuntimeFailure
from cartoon.methods.base import Batch
from cartoon.params import LoopParams
from cartoon.progress import console, progress


class ImageSet(Images):
    """An image set a phase trains on; a store stays memory-mapped and only batches are read."""

    def rows(self, index: torch.Tensor) -> np.ndarray:
        """Rows ``index`` as uint8 N x H x W x 3, read in file order (each once) for locality,
        then put back in the order asked for."""
        unique, inverse = np.unique(index.numpy(), return_inverse=True)
        return self.pixels[unique][inverse]

    def batch(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index`` as float N x 3 x H x W in [-1, 1]; only uint8 goes to the device."""
        pixels = torch.from_numpy(self.rows(index)).permute(0, 3, 1, 2).contiguous()
        return pixels.to(device).float().div_(127.5).sub_(1.0)


def load_image_set(path: Path, label: str, allow_empty: bool = False) -> ImageSet | None:
    """An image set from a store or a folder of same-size images; an empty set is an error unless
    ``allow_empty`` (then None)."""
    images = open_images(path, label)
    if not images.names:
        if allow_empty:
            return None
        raise RuntimeFailure(f"no images in {label} set {path}")
    return ImageSet(images.names, images.pixels)


def load_face_sets(data: dict[str, Path | None], needed: tuple[str, ...], every: int) -> dict[str, ImageSet]:
    """``face_<set>`` for every set a phase needs, or {} when faces are off, not given or empty.

    White-box (Wang and Yu 2020) mixes a face batch into the scenery batches; the resize stage
    always writes the face stores, empty when sources.yaml has no face source. Turning faces
    off is said out loud, never silent.
    """
    given = {name: data[f"face_{name}"] for name in needed if data.get(f"face_{name}") is not None}
    if every == 0 or not given:
        return {}
    loaded = {name: load_image_set(path, f"face_{name}", allow_empty=True) for name, path in given.items()}
    present = {name: image_set for name, image_set in loaded.items() if image_set is not None}
    if not present:
        console.print("faces: the face sets are empty; training on the other images only")
        return {}
    lacking = [f"face_{name}" for name in needed if name not in present]
    if lacking:
        console.print(f"faces: ignored, this phase also needs {', '.join(lacking)}, which has no images or was not given")
        return {}
    return {f"face_{name}": image_set for name, image_set in present.items()}


def data_digest(sets: dict[str, ImageSet]) -> tuple[str, dict[str, str]]:
    """sha256 over the exact pixels and names of every image set a phase trains on, and of each
    set alone (its MLflow dataset digest), from one read of the data.

    Stores are read slice by slice, never whole. Pixels are hashed in the N x 3 x H x W order of
    the tensors the networks see, the order of earlier runs, so their ``data.sha256`` tags compare.
    """
    digest = hashlib.sha256()
    each = {name: hashlib.sha256() for name in sets}
    with progress() as bar:
        task = bar.add_task("hash data", total=sum(len(image_set.names) for image_set in sets.values()), status="")
        for name in sorted(sets):
            hashers = (digest, each[name])
            for hasher in hashers:
                hasher.update(name.encode() + "\n".join(sets[name].names).encode())
            for rows in row_chunks(sets[name].pixels):
                chunk = np.ascontiguousarray(sets[name].pixels[rows].transpose(0, 3, 1, 2))
                for hasher in hashers:
                    hasher.update(chunk)
                bar.update(task, advance=rows.stop - rows.start)
    return digest.hexdigest(), {name: hashed.hexdigest() for name, hashed in each.items()}


def face_boxes(photos: torch.Tensor) -> torch.Tensor:
    """Where the face is in each image of a face batch (N x 4, left top right bottom, pixels):
    face crops are aligned to one template (``cartoon.data.faces``), so it is the same square in all."""
    height, width = photos.shape[-2:]
    box = torch.tensor(FACE_BOX, dtype=torch.float32, device=photos.device) * torch.tensor([width, height, width, height], device=photos.device)
    return box.expand(photos.shape[0], 4).clone()


def _epoch_order(n: int, seed: int, epoch: int, salt: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + salt)
    return torch.randperm(n, generator=generator)


@dataclass(frozen=True)
class _Slot:
    faces: bool  # a face batch
    epoch: int  # the scenery epoch, or the pass over the face set
    index: int  # the batch within it
    epoch_done: bool  # this batch completes a scenery epoch


def _slot(step: int, per_epoch: int, face_every: int, face_batches: int) -> _Slot:
    """What global step ``step`` draws. With faces, every ``face_every``-th step is a face batch
    (the cadence runs across epochs); the other steps walk through the scenery epochs in order,
    so every epoch still sees all its photos. Depends on the step alone, so a resume redraws
    exactly the batches the killed run would have."""
    if face_every and (step + 1) % face_every == 0:
        drawn = step // face_every  # face batches before this one
        return _Slot(True, drawn // face_batches, drawn % face_batches, False)
    scenery = step - (step // face_every if face_every else 0)
    return _Slot(False, scenery // per_epoch, scenery % per_epoch, scenery % per_epoch == per_epoch - 1)


def _total_steps(epochs: int, per_epoch: int, face_every: int) -> int:
    """All scenery batches of all epochs, with the face batches that fall between them."""
    scenery = epochs * per_epoch
    return scenery + ((scenery - 1) // (face_every - 1) if face_every else 0)


def _epoch_orders(
    group: dict[str, ImageSet], prefix: str, style_sets: list[str], seed: int, epoch: int, salt: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shuffles of one epoch for a group of sets (scenery, or faces with ``prefix`` face_): photos, and the style sets together."""
    photo = _epoch_order(len(group[f"{prefix}photo"].names), seed, epoch, salt)
    style = _epoch_order(len(group[prefix + style_sets[0]].names), seed, epoch, salt + 1) if style_sets else None
    return photo, style


class BatchSource:
    """The batches of one phase: the photo set, the style sets drawn together with it (index
    aligned, file by file), and optionally face sets that take every ``face_every``-th step."""

    def __init__(self, sets: dict[str, ImageSet], faces: dict[str, ImageSet], loop: LoopParams, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> None:
        self.sets, self.faces, self.loop, self.device = sets, faces, loop, device
        self.rank, self.world_size = rank, world_size
        self.style_sets = [name for name in sets if name != "photo"]
        for group in (self.style_sets, [f"face_{name}" for name in self.style_sets] if faces else []):
            for name in group[1:]:
                if (faces | sets)[name].names != (faces | sets)[group[0]].names:
                    raise RuntimeFailure(f"image set {name} does not match {group[0]} file by file; re-run the stages making them")
        global_batch = loop.batch_size * world_size
        self.steps_per_epoch = math.ceil(len(sets["photo"].names) / global_batch)
        if loop.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, loop.max_steps_per_epoch)
        self.face_every = loop.face_every if faces else 0
        self.face_batches = math.ceil(len(faces["face_photo"].names) / global_batch) if faces else 0
        self.total_steps = _total_steps(loop.epochs, self.steps_per_epoch, self.face_every)
        self._orders: dict[str, tuple[int, tuple[torch.Tensor, torch.Tensor | None]]] = {}  # per kind: (epoch, shuffles)

    @property
    def face_images(self) -> int:
        return len(self.faces["face_photo"].names) if self.faces else 0

    def digest(self) -> tuple[str, dict[str, str]]:
        """The digest of all the sets this phase trains on, and of each set (see ``data_digest``)."""
        return data_digest(self.sets | self.faces)

    def draw(self, step: int) -> tuple[Batch, bool]:
        """This rank's batch of global step ``step``, and whether it completes a scenery epoch."""
        slot = _slot(step, self.steps_per_epoch, self.face_every, self.face_batches)
        prefix, group, salt = ("face_", self.faces, 2) if slot.faces else ("", self.sets, 0)
        if self._orders.get(prefix, (None,))[0] != slot.epoch:  # shuffles depend on (seed, epoch) only
            self._orders[prefix] = (slot.epoch, _epoch_orders(group, prefix, self.style_sets, self.loop.seed, slot.epoch, salt))
        photo_order, style_order = self._orders[prefix][1]
        within = torch.arange(slot.index * self.loop.batch_size, (slot.index + 1) * self.loop.batch_size)
        positions = within * self.world_size + self.rank  # this rank's share of the epoch's order
        batch = {"photo": group[f"{prefix}photo"].batch(photo_order[positions % len(photo_order)], self.device)}
        if style_order is not None:
            pick = style_order[positions % len(style_order)]
            batch.update({name: group[prefix + name].batch(pick, self.device) for name in self.style_sets})
        if slot.faces:
            batch["face_boxes"] = face_boxes(batch["photo"])
        return batch, slot.epoch_done


class Prefetch:
    """This rank's batches from global step ``first`` to the end, each drawn in a background
    thread while the step before it runs (reading rows, converting, copying to the device).

    Batches depend on the step alone, so they are exactly those drawn in line; one thread draws
    them one at a time, in step order (the source's shuffle cache has no other user). Use as a
    context manager: leaving it (end, error, Ctrl-C) cancels the draw not started and waits for
    the one running, so no thread outlives the phase.
    """

    def __init__(self, source: BatchSource, first: int) -> None:
        self.source, self.first = source, first

    def __enter__(self) -> Prefetch:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[Batch, bool]]:
        total = self.source.total_steps
        pending = self._pool.submit(self.source.draw, self.first) if self.first < total else None
        for step in range(self.first, total):
            drawn = pending.result()  # type: ignore[union-attr]
            pending = self._pool.submit(self.source.draw, step + 1) if step + 1 < total else None
            yield drawn
