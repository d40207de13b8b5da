"""The ``resize`` stage: crawled images -> square training images, with a stable photo train/test split.

Output: one image store per set (``cartoon.data.store``: ``<set>.npy`` + ``<set>.names.txt``),
``<out>/photo/train.npy``, ``<out>/photo/test.npy``, ``<out>/cartoon/train.npy``,
``<out>/face_photo/train.npy``, ``<out>/face_cartoon/train.npy``, rows in item_id order, and
``<out>/manifest.csv``, whose ``path`` and ``row`` columns locate every usable item. Only photos
are held out; the face stores (face batches of White-box and the face method) always exist so
the training stages can depend on them, with no rows when there are no faces.

Face images are not squared but detected and aligned (``cartoon.data.faces``): every face kept
becomes its own row (``<item_id>-face<k>`` after the first), an aligned crop with its detection
score and its five landmarks in the crop (``face_score``, ``landmarks``: x1 y1 ... x5 y5); an
image without a usable face is rejected with the reason. A face photo taken from a source
photograph whose crops are held out as test photos is rejected too, so no held-out photo's
source is ever trained on.

References (the ``reference`` domain: expected outputs, e.g. a hazy photo's clear original) are
paired with the photo of the same crawl origin. Only those of held-out photos are kept, in
``<out>/reference/test.npy`` under their PHOTO's item id, so ``cartoon evaluate --references``
matches them to ``photo/test.npy`` by name; the rest are ``dropped`` in the manifest with the
reason (a training photo's reference would tell nothing about held-out quality). The store
always exists, with no rows when there are no references, so the evaluate stage can depend on it.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cartoon.data.faces import FaceDetector, align
from cartoon.data.imageio import ImageRejected, decode_image
from cartoon.data.store import STORE_SUFFIX, StoreWriter, write_store
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.params import ResizeParams
from cartoon.progress import console, progress

MANIFEST_COLUMNS = [
    "item_id", "domain", "split", "sha256", "source", "origin", "licence",
    "width", "height", "status", "reason", "path", "row", "face_score", "landmarks", "paired_with",
]  # fmt: skip
DOMAINS = ("photo", "cartoon")  # both needed for training
FACE_DOMAINS = ("face_photo", "face_cartoon")  # optional
REFERENCE = "reference"  # optional: expected outputs of held-out photos
SETS = (("photo", "train"), ("photo", "test"), ("cartoon", "train"), ("face_photo", "train"), ("face_cartoon", "train"),
        (REFERENCE, "test"))  # fmt: skip
_NEEDED = ("item_id", "domain", "sha256", "source", "origin", "licence", "status", "path")


def source_photograph(origin: str) -> str:
    """The source photograph an item was taken from: its origin up to any ``#`` fragment.

    Crops of one bundled photograph (``builtin:coffee#crop003``) and frames of one video
    (``clip.mp4#frame=120``) share a source; any other item is its own.
    """
    return origin.split("#", 1)[0]


def split_photos(groups: dict[str, str], test_fraction: float, seed: int) -> dict[str, str]:
    """item_id -> "train" | "test", keeping every source photograph on one side.

    ``groups`` maps each item_id to its source photograph (``source_photograph``). Sources are
    ranked by sha256(seed, source); the test set is the lowest-ranked sources, as many as bring
    the number of test items closest to test_fraction * n (ties: the larger), at least one
    source when there are two or more and test_fraction > 0, and never all of them, so training
    keeps a photo. When every item is its own source this is round(test_fraction * n) items,
    halves rounding up. The decision depends on the seed and the set of ids only (not their
    order); because a source's rank never depends on the others, adding a photo never moves an
    existing one from train to test, and with one item per source moves at most one (the
    last-ranked test photo) from test to train, only when the newcomer takes its test place.
    """
    members: dict[str, list[str]] = {}
    for item_id in sorted(groups):
        members.setdefault(groups[item_id], []).append(item_id)
    ranked = sorted(members, key=lambda group: hashlib.sha256(f"{seed}\0{group}".encode()).digest())
    sizes = np.cumsum([0] + [len(members[group]) for group in ranked])
    if len(ranked) < 2 or test_fraction <= 0:
        n_test_groups = 0
    else:
        target = test_fraction * sizes[-1]
        candidates = range(1, len(ranked))  # at least one source held out, at least one kept
        n_test_groups = min(candidates, key=lambda k: (abs(sizes[k] - target), -k))
    test = {item_id for group in ranked[:n_test_groups] for item_id in members[group]}
    return {item_id: ("test" if item_id in test else "train") for item_id in sorted(groups)}


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale so the shorter side is ``size`` (area filter to shrink, cubic to enlarge), then crop
    the centre ``size`` x ``size``: no distortion and no padding borders for the GAN to learn."""
    height, width = rgb.shape[:2]
    scale = size / min(height, width)
    if scale != 1:
        new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
        rgb = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        height, width = rgb.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def store_name(domain: str, split: str) -> str:
    """Where a set's store lies in the resize output: ``photo/train.npy``."""
    return f"{domain}/{split}{STORE_SUFFIX}"


class _Faces:
    """The face detector of a domain, shared by the resize workers: built on first use (no face
    images, no MTCNN), one detection at a time (MTCNN already uses every core through torch, and
    its modules are not meant for concurrent calls)."""

    def __init__(self, min_size: int, min_score: float) -> None:
        self.min_size, self.min_score = min_size, min_score
        self.detector: FaceDetector | None = None
        self.lock = threading.Lock()

    def crops(self, rgb: np.ndarray, row: dict, slots: np.ndarray, size: int) -> list[dict]:
        """Aligned crops of the faces in ``rgb`` into ``slots``, a row each; or one rejected row."""
        with self.lock:
            if self.detector is None:
                self.detector = FaceDetector(self.min_size, self.min_score)
            faces, reason = self.detector.detect(rgb)
        if not faces:
            return [_rejected(row, reason)]
        rows = []
        for index, face in enumerate(faces[: len(slots)]):
            try:
                slots[index], points = align(rgb, face.points, size)
            except ValueError as exc:  # degenerate landmarks
                return [_rejected(row, str(exc))] if not rows else rows
            rows.append({**row, "item_id": row["item_id"] + (f"-face{index}" if index else ""),
                         "face_score": round(face.score, 4), "landmarks": " ".join(f"{v:.2f}" for v in points.ravel())})  # fmt: skip
        return rows


def _rejected(row: dict, reason: str) -> dict:
    return {**row, "status": "rejected", "reason": reason, "split": "", "path": ""}


def _process(row: dict, raw_dir: Path, slots: np.ndarray, params: ResizeParams, faces: _Faces | None) -> list[dict]:
    """Decode one image into its ``slots`` of the store: a centre square, or with ``faces`` an
    aligned crop per face. A failure becomes a rejected row, never an exception."""
    if row["status"] == "rejected":
        return [row]
    try:
        rgb = decode_image((raw_dir / row["path"]).read_bytes(), params.max_pixels)
    except OSError as exc:
        return [_rejected(row, f"unreadable ({type(exc).__name__})")]
    except ImageRejected as exc:
        return [_rejected(row, exc.reason)]
    decoded = {**row, "width": rgb.shape[1], "height": rgb.shape[0], "status": "ok", "reason": ""}
    if faces is not None:
        return faces.crops(rgb, decoded, slots, params.size)
    slots[0] = square(rgb, params.size)
    return [decoded]


def depicted_photograph(origin: str) -> str:
    """The photograph an item shows, however it was rendered: its source photograph, less a
    builtin rendering's style (``builtin:celshade/coffee#crop003`` shows ``builtin:coffee``)."""
    source = source_photograph(origin)
    if source.startswith("builtin:") and "/" in source:
        return "builtin:" + source.rsplit("/", 1)[1]
    return source


def _hold_out_test_sources(rows: list[dict]) -> None:
    """Reject training items of the other domains (cartoon renderings, face photos) that show a
    photograph with crops in the photo test set, so no held-out photo is seen in training."""
    held_out = {source_photograph(row["origin"]) for row in rows if row["domain"] == "photo" and row["split"] == "test"}
    for row in rows:
        if row["domain"] not in ("photo", REFERENCE) and depicted_photograph(row["origin"]) in held_out:
            row.update(_rejected(row, "source photograph held out for testing (photo test set)"))


def _pair_references(rows: list[dict]) -> None:
    """Keep the reference of each held-out photo (split ``test``, ``paired_with`` its photo's
    item id); drop every other reference with the reason."""
    photos: dict[str, list[dict]] = {}
    for row in rows:
        if row["domain"] == "photo":
            photos.setdefault(row["origin"], []).append(row)
    paired: set[str] = set()
    for row in sorted((row for row in rows if row["domain"] == REFERENCE), key=lambda item: item["item_id"]):
        matches = photos.get(row["origin"], [])
        reason = ""
        if not matches:
            reason = "no usable photo with this origin"
        elif len(matches) > 1:
            reason = f"origin matches {len(matches)} photos"
        elif matches[0]["split"] != "test":
            reason = "its photo is a training photo (references are kept for held-out photos only)"
        elif matches[0]["item_id"] in paired:
            reason = "its photo has another reference"
        if reason:
            row.update(status="dropped", reason=reason, split="", path="")
        else:
            paired.add(matches[0]["item_id"])
            row.update(split="test", paired_with=matches[0]["item_id"])


def _read_crawl_manifest(raw_dir: Path) -> pd.DataFrame:
    path = raw_dir / "manifest.csv"
    if not path.is_file():
        raise UsageError(f"crawl manifest not found: {path} (run the crawl stage first)")
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in _NEEDED if column not in manifest.columns]
    if missing:
        raise RuntimeFailure(f"{path} lacks columns {', '.join(missing)}; rerun the crawl stage")
    return manifest


def _missing_domains(rows: list[dict]) -> list[str]:
    present = {row["domain"] for row in rows if row["status"] == "ok"}
    return [domain for domain in DOMAINS if domain not in present]


def _fail_if_missing(rows: list[dict], where: str) -> None:
    missing = _missing_domains(rows)
    if missing:
        kinds = " and ".join(f"no usable {domain}s" for domain in missing)
        raise RuntimeFailure(f"resize: {kinds} {where}; check sources.yaml and the reasons in the crawl manifest")


def resize(raw_dir: Path, out_dir: Path, params: ResizeParams) -> pd.DataFrame:
    """Run the resize stage and return its manifest (also written to ``out_dir/manifest.csv``).

    Only ``ok`` rows of the crawl manifest are used; the photo split is decided from them before
    decoding, by source photograph, so it depends only on the seed and the crawled ids and
    origins. ``params.workers`` threads decode
    and square images straight into the stores' memory maps. Rows that fail to decode stay in the
    manifest as rejected. Raises RuntimeFailure when either domain ends up with no usable image,
    since training needs both.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    crawled = _read_crawl_manifest(raw_dir)
    usable = crawled[(crawled.status == "ok") & crawled.domain.isin(DOMAINS + FACE_DOMAINS + (REFERENCE,))]
    rows = [
        {column: row[column] for column in ("item_id", "domain", "sha256", "source", "origin", "licence", "path")}
        | {"width": None, "height": None, "status": "ok", "reason": "", "paired_with": ""}
        for row in usable.to_dict("records")
    ]
    _fail_if_missing(rows, f"in {raw_dir / 'manifest.csv'}")
    photo_sources = {row["item_id"]: source_photograph(row["origin"]) for row in rows if row["domain"] == "photo"}
    splits = split_photos(photo_sources, params.test_fraction, params.seed)
    for row in rows:
        row["split"] = splits[row["item_id"]] if row["domain"] == "photo" else "train"
    _hold_out_test_sources(rows)
    _pair_references(rows)

    for domain in DOMAINS + FACE_DOMAINS + (REFERENCE,):
        shutil.rmtree(out_dir / domain, ignore_errors=True)
    (out_dir / "manifest.csv").unlink(missing_ok=True)

    groups: dict[str, list[dict]] = {store_name(domain, split): [] for domain, split in SETS}
    done: list[dict] = [row for row in rows if row["status"] == "dropped"]  # not decoded: no store holds them
    for row in sorted(rows, key=lambda item: item["item_id"]):  # stable row order: reruns are byte-identical
        if row["status"] != "dropped":
            groups[store_name(row["domain"], row["split"] or "train")].append(row)
    # Every image gets as many rows of its store as it may yield: one, or max_per_image faces.
    # Unused rows cost nothing (the temp file is sparse) and are left out when the store is written.
    slots = {name: params.faces.max_per_image if name.split("/")[0] in FACE_DOMAINS else 1 for name in groups}
    detectors = {"face_photo": _Faces(params.faces.min_size, params.faces.min_score),
                 "face_cartoon": _Faces(params.faces.min_size, params.faces.cartoon_min_score)}  # fmt: skip
    counts: Counter[str] = Counter()
    with ExitStack() as stack:
        writers = {name: stack.enter_context(StoreWriter(out_dir / name, len(group) * slots[name], params.size, params.size))
                   for name, group in groups.items()}  # fmt: skip
        with progress() as bar, ThreadPoolExecutor(max_workers=params.workers) as pool:
            task = bar.add_task("resize", total=sum(map(len, groups.values())), status="")
            futures = {name: [pool.submit(_process, row, raw_dir, writers[name].pixels[index * slots[name] : (index + 1) * slots[name]],
                                          params, detectors.get(name.split("/")[0]))
                              for index, row in enumerate(group)] for name, group in groups.items()}  # fmt: skip
            for future in as_completed([future for group in futures.values() for future in group]):
                counts[future.result()[0]["status"]] += 1
                bar.update(task, advance=1, status=f"{counts['ok']} ok, {counts['rejected']} rejected")
        for name, group in futures.items():
            used: list[int] = []  # the store rows that hold an image, in order
            names: list[str] = []
            for index, future in enumerate(group):
                for offset, result in enumerate(future.result()):
                    if result["status"] == "ok":
                        result.update(path=name, row=len(used))
                        used.append(index * slots[name] + offset)
                        names.append(result["paired_with"] or result["item_id"])  # a reference: its photo's id
                    done.append(result)
            if used == list(range(len(group) * slots[name])):
                writers[name].commit(names)
            else:  # copy the decoded rows into a store without the gaps
                write_store(out_dir / name, names, writers[name].pixels, used)
    manifest = pd.DataFrame(done, columns=MANIFEST_COLUMNS).astype({"width": "Int64", "height": "Int64", "row": "Int64",
                                                                    "face_score": "Float64"})  # fmt: skip
    manifest = manifest.sort_values(["domain", "split", "item_id"], kind="stable", ignore_index=True)
    manifest.to_csv(out_dir / "manifest.csv", index=False, lineterminator="\n")
    console.print(summary(manifest, params.size), markup=False, highlight=False)
    _fail_if_missing(done, "after decoding")
    return manifest


def summary(manifest: pd.DataFrame, size: int) -> str:
    """One line for the log: ``resize: 40 photos (32 train, 8 test), 12 cartoons at 64x64, 0 rejected``,
    and when there are references ``, 8 references of test photos (32 dropped: 32 its photo is a training photo)``."""
    ok = manifest[manifest.status == "ok"]
    photos = ok[ok.domain == "photo"]
    n_test = int((photos.split == "test").sum())
    faces = "".join(f", {n} {domain}s" for domain in FACE_DOMAINS if (n := int((ok.domain == domain).sum())))
    text = (
        f"resize: {len(photos)} photos ({len(photos) - n_test} train, {n_test} test), "
        f"{int((ok.domain == 'cartoon').sum())} cartoons{faces} at {size}x{size}, "
        f"{int((manifest.status == 'rejected').sum())} rejected"
    )
    references = manifest[manifest.domain == REFERENCE]
    if len(references):
        dropped = references[references.status == "dropped"]
        reasons = sorted(Counter(reason.split(" (")[0] for reason in dropped.reason).items())
        text += f", {int((references.status == 'ok').sum())} references of test photos ({len(dropped)} dropped"
        text += (": " + ", ".join(f"{n} {reason}" for reason, n in reasons) if reasons else "") + ")"
    return text
