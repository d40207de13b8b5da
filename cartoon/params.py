"""Validated view of params.yaml.

Every stage reads its own section through these models, so a typo or a wrong type fails
before any work starts, with an error that names the key (``train.epochs: ...``).
Method-specific sections (``cartoongan:``, ...) are validated by the schema that the
selected method registers (``cartoon.methods.load_run_params``), so adding a method adds no field here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cartoon.errors import UsageError


class Section(BaseModel):
    """A params section: unknown keys are errors, values are checked, defaults are documented."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CrawlParams(Section):
    sources: str = Field(
        "pipeline/sources.yaml", pattern=r"\.ya?ml$",
        description="the sources file the crawl stage reads (dvc.yaml interpolates it): a profile's data, e.g. pipeline/sources-dehaze.yaml",
    )
    timeout_s: float = Field(10.0, gt=0, description="HTTP connect/read timeout per request")
    max_bytes: int = Field(20_000_000, ge=1024, description="byte cap per downloaded file")
    retries: int = Field(3, ge=0, le=10, description="retries per URL after the first try")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry")
    max_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb cap (width*height)")
    workers: int = Field(4, ge=1, le=64, description="concurrent downloads, decodes and frame encodes")
    per_host: int = Field(2, ge=1, le=16, description="requests in flight per host at most")
    host_delay_s: float = Field(0.5, ge=0, description="seconds between request starts to one host")
    respect_robots: bool = Field(True, description="honour robots.txt (RFC 9309)")
    allow_private: bool = Field(
        False,
        description="fetch from loopback, private, link-local and other non-global addresses; off, a URL, redirect or "
        "link whose host resolves to one is refused, so a sources file or a web page cannot make the crawl reach "
        "internal services",
    )
    min_side: int = Field(1, ge=1, description="images whose shorter side is below this many pixels are rejected (1: no limit)")
    max_aspect: float = Field(4.0, ge=1, description="images longer than this times their width (or the reverse) are rejected")
    near_duplicate_distance: int = Field(
        4, ge=-1, le=63, description="perceptual-hash Hamming distance at or below which images of a domain are duplicates; -1: exact copies only"
    )
    max_archive_bytes: int = Field(4_000_000_000, ge=1024, description="size cap of one archive file (download or local)")
    max_archive_total_bytes: int = Field(20_000_000_000, ge=1024, description="decompressed bytes read from one archive at most")
    max_archive_members: int = Field(200_000, ge=1, description="entries read from one archive at most")


class FaceCropParams(Section):
    """How face images (the face_photo and face_cartoon domains) become aligned training crops."""

    min_size: int = Field(40, ge=12, description="faces whose detection box is shorter than this (pixels, in the source image) are rejected")
    min_score: float = Field(0.95, ge=0, le=1, description="face photos: faces MTCNN scores below this are rejected")
    cartoon_min_score: float = Field(
        0.8, ge=0, le=1, description="face cartoons: the same for cartoon faces, which a detector trained on photos scores lower"
    )
    max_per_image: int = Field(4, ge=1, le=64, description="faces kept per image at most, largest first; each is its own row")


class ResizeParams(Section):
    size: int = Field(64, ge=16, le=4096, description="square side of training images, pixels")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of photos held out")
    seed: int = 0
    max_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb cap (width*height)")
    workers: int = Field(4, ge=1, le=64, description="concurrent decode + resize workers")
    faces: FaceCropParams = FaceCropParams()


class SmoothParams(Section):
    canny_low: int = Field(100, ge=0, le=255)
    canny_high: int = Field(200, ge=0, le=255)
    kernel_size: int = Field(5, ge=3, le=31, description="dilation and Gaussian kernel side (odd)")

    @model_validator(mode="after")
    def _check(self) -> SmoothParams:
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if self.canny_low > self.canny_high:
            raise ValueError("canny_low must not exceed canny_high")
        return self


class ModelParams(Section):
    name: str = Field("cartoongan", description="method: a name from `cartoon methods`")


class VggParams(Section):
    weights: str | None = Field(None, description="path to torchvision VGG19 weights (.pth or .safetensors)")
    allow_random: bool = Field(False, description="fall back to seeded random weights (labelled) if none found")
    seed: int = 0
    random_layer: Literal["relu1_2", "relu2_2", "relu3_4", "conv4_4", "relu4_4", "relu5_4"] | None = Field(
        None,
        description="with the random fallback only: the layer content losses and the perceptual metric read instead of "
        "the method's (random deep layers keep little of a photo; see README)",
    )
    precision: Literal["auto", "fp32"] = Field(
        "auto",
        description="auto: the features take the step's precision (bf16 under bf16 autocast); fp32: always fp32, so "
        "content terms near zero (input_skip's start) keep their value under bf16, at the cost of the VGG's bf16 speed",
    )


class DistributedParams(Section):
    """Multi-process data-parallel training (README: Multi-process training). One process per device;
    ``nproc_per_node * nnodes`` processes in all, each drawing ``batch_size`` images per step."""

    nproc_per_node: int = Field(1, ge=1, description="processes (one per GPU, or CPU processes) on each node; above 1 overall, the stage re-launches itself under torchrun")
    nnodes: int = Field(1, ge=1, description="nodes (machines) taking part; each runs the same command with its own node_rank")
    node_rank: int = Field(0, ge=0, description="this node's index, 0 to nnodes - 1; node 0 hosts the rendezvous")
    rdzv_endpoint: str = Field("127.0.0.1:29500", pattern=r"^\S+:\d+$", description="host:port of node 0 where the processes meet (torchrun --rdzv_endpoint)")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="collective backend: auto = nccl on CUDA, gloo on the CPU")

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> DistributedParams:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank must be below nnodes ({self.nnodes})")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class LoopParams(Section):
    """Settings every method's training loop shares (the method owns its learning rates and losses)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1, description="images per step and process: with W processes a step trains on W * batch_size")
    log_every: int = Field(10, ge=1, description="steps between loss logs")
    sample_every: int = Field(100, ge=1, description="steps between sample grids")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (smoke runs)")
    face_every: int = Field(
        5, ge=0, description="when face sets have images, every Nth batch is drawn from them (White-box: 5); 0 = never"
    )

    @model_validator(mode="after")
    def _face_cadence(self) -> LoopParams:
        if self.face_every == 1:
            raise ValueError("face_every must be 0 (no face batches) or at least 2 (1 would leave no scenery batch)")
        return self
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="numeric precision of the training steps: fp32 (the papers'); bf16 or fp16 mixed precision "
        "(autocast; Gram matrices, the guided filter and loss reductions stay fp32; fp16 needs CUDA and scales "
        "gradients); auto = bf16 where it is fast (CUDA with bf16, a CPU with AMX or AVX512-BF16), else fp32",
    )
    channels_last: Literal["auto"] | bool = Field(
        False, description="keep networks and batches in channels-last memory layout (faster convolutions on tensor cores and "
        "oneDNN's AMX kernels); auto = on where the steps run in bf16 or fp16, off at fp32"
    )
    compile: bool = Field(
        False, description="torch.compile every network (generator, discriminators, VGG): faster steps after a compile of "
        "tens of seconds to minutes, which dominates short runs (off by default)"
    )
    distributed: DistributedParams = DistributedParams()


class LandmarkParams(Section):
    """MTCNN's O-Net, the face method's landmark network and the face metrics' (cartoon.landmarks)."""

    weights: str | None = Field(
        None, description="O-Net weights (.pt of plain tensors or .safetensors); default: the onet.pt that the facenet-pytorch wheel ships"
    )


class EvaluateParams(Section):
    max_side: int = Field(512, ge=16, description="longer image side is scaled down to this before inference")
    faces: Literal["auto", "aligned", "off"] = Field(
        "auto", description="face metrics: auto = on the faces MTCNN finds in the photos; aligned = every photo is an aligned face crop; off"
    )
    face_min_size: int = Field(24, ge=12, description="faces smaller than this (pixels) are not measured")
    dlib_predictor: str | None = Field(
        None,
        description="dlib 68-point model of the independent landmark check; default: the shape_predictor_68_face_landmarks.dat "
        "that face-recognition-models ships (the faces68 extra)",
    )
    grid_images: int = Field(8, ge=1, description="images shown in the comparison grid")
    batch_size: int = Field(1, ge=1)
    fid: bool = Field(True, description="FID and KID to the cartoon set and to the input photos (needs the FID Inception weights)")
    inception_weights: str | None = Field(
        None,
        description="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: torch's hub cache; never downloaded",
    )


class TrackingParams(Section):
    experiment: str = "cartoon"
    register_model: bool = Field(True, description="register each trained generator as a model version")
    system_metrics: bool = True


class Params(BaseModel):
    """All of params.yaml. Extra top-level keys are method sections (``cartoon.methods.load_run_params`` checks them)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    crawl: CrawlParams = CrawlParams()
    resize: ResizeParams = ResizeParams()
    smooth: SmoothParams = SmoothParams()
    model: ModelParams = ModelParams()
    vgg: VggParams = VggParams()
    pretrain: LoopParams = LoopParams()
    train: LoopParams = LoopParams()
    landmarks: LandmarkParams = LandmarkParams()
    evaluate: EvaluateParams = EvaluateParams()
    tracking: TrackingParams = TrackingParams()


def flatten(data: Any, prefix: str = ""):
    """(dotted key, value) pairs of nested mappings."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], data


def _describe(errors: list[dict[str, Any]], prefix: str) -> str:
    lines = []
    for err in errors:
        key = prefix + ".".join(str(part) for part in err["loc"])
        given = err.get("input")
        msg = err["msg"].replace("Value error, ", "")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg} (got {given!r})" if err["type"] != "missing" else f"{key}: {msg}")
    return "; ".join(lines)


def validate(model: type[BaseModel], raw: Any, prefix: str = "") -> Any:
    """``model`` from ``raw``; a problem is a UsageError naming each key (under ``prefix``)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"invalid params: {_describe(exc.errors(), prefix)}") from None


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file the user wrote; a missing file or a syntax error is a UsageError."""
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file's shared sections; every problem is a UsageError naming the key.

    The data stages need no more. Stages that run a method use ``cartoon.methods.load_run_params``,
    which also checks the method sections: checking them here would import every method and so
    make each method's code a dep of the data stages (``tests/test_stage_deps.py``).
    """
    path = Path(path)
    raw = read_yaml(path, "params")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping of sections at the top level")
    return validate(Params, raw)
