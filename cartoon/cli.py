"""`cartoon`: the command line of every pipeline stage (DVC calls these; people do too).

Exit codes: 0 success, 2 usage errors (bad option, bad params key, missing input), 1 runtime
failures (NaN loss, unreadable checkpoint, no usable images).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from cartoon.errors import RuntimeFailure, UsageError
from cartoon.progress import console

app = typer.Typer(
    name="cartoon",
    help="Reproducible photo-to-cartoon GANs: data stages, training, evaluation. `dvc repro` runs them all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
F = TypeVar("F", bound=Callable[..., Any])

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file (validated; see README for keys)")]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    console.print(f"[bold yellow]WARNING[/] {message}")


def handle_errors(func: F) -> F:
    """Turn the project's exceptions into a red message and exit code 2 (usage) or 1 (runtime).

    Messages are escaped: they quote paths and file contents, whose brackets rich would
    otherwise read as markup (dropping text, or failing on an unmatched closing tag).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except RuntimeFailure as exc:
            console.print(f"[bold red]failed:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _load(params_path: Path):  # noqa: ANN202
    """The shared params sections, all a data stage reads (its deps stay free of method code)."""
    from cartoon.params import load_params

    return load_params(params_path)


def _load_run(params_path: Path):  # noqa: ANN202
    """The params with the method sections checked too, for stages that run a method."""
    from cartoon.methods import load_run_params

    return load_run_params(params_path)


@app.command()
@handle_errors
def crawl(
    sources: Annotated[Path | None, typer.Option(help="YAML list of sources (builtin, local, urls, ...); default: crawl.sources of the params")] = None,
    out: Annotated[Path, typer.Option(help="output folder: images/<domain>/ and manifest.csv")] = Path("data/raw"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Gather raw photos and cartoons from the configured sources; record every item in a manifest."""
    from cartoon.data.crawl import crawl as run

    settings = _load(params).crawl
    run(sources or Path(settings.sources), out, settings)


@app.command()
@handle_errors
def resize(
    raw: Annotated[Path, typer.Option(help="crawl output folder (with manifest.csv)")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="output folder: image stores photo/{train,test}.npy, cartoon/train.npy, face_*/train.npy, reference/test.npy; manifest.csv")] = Path("data/resized"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Decode safely, resize and centre-crop to resize.size, split photos into train and held-out test, write image stores."""
    from cartoon.data.resize import resize as run

    run(raw, out, _load(params).resize)


@app.command()
@handle_errors
def smooth(
    cartoons: Annotated[Path, typer.Option(help="resized cartoons: a .npy image store (or a folder of same-size images)")] = Path("data/resized/cartoon/train.npy"),
    out: Annotated[Path, typer.Option(help="image store (.npy) for the edge-smoothed copies (same names, same order)")] = Path("data/smoothed/train.npy"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Make CartoonGAN's edge-smoothed cartoon set (Canny, dilate, Gaussian blur at edges)."""
    from cartoon.data.smooth import smooth_store

    count = smooth_store(cartoons, out, _load(params).smooth)
    console.print(f"smooth: {count} images written to {out}")


@app.command()
@handle_errors
def gray(
    cartoons: Annotated[Path, typer.Option(help="resized cartoons: a .npy image store (or a folder of same-size images)")] = Path("data/resized/cartoon/train.npy"),
    smoothed: Annotated[Path, typer.Option(help="edge-smoothed cartoons: a .npy image store (or a folder)")] = Path("data/smoothed/train.npy"),
    out: Annotated[Path, typer.Option(help="output folder: image stores cartoon.npy and smooth.npy, grayscale copies (3 channels)")] = Path("data/gray"),
) -> None:
    """Make grayscale (3-channel) copies of the cartoon and edge-smoothed sets (AnimeGAN's gray sets)."""
    from cartoon.data.imageio import gray3
    from cartoon.data.store import STORE_SUFFIX, map_store

    for source, name in ((cartoons, "cartoon"), (smoothed, "smooth")):
        target = out / f"{name}{STORE_SUFFIX}"
        count = map_store(source, target, gray3, f"gray {name}")
        console.print(f"gray: {count} images written to {target}")


def _phase(phase: str, params_path: Path, sets: dict[str, Path | None], model_dir: Path,
           reports: Path, checkpoint: Path, init: Path | None) -> None:
    """Run a training phase; ``sets`` maps every image-set name to its store or folder (methods pick theirs).
    With ``<phase>.distributed`` asking for several processes, this command re-runs itself in
    each of them under torchrun (``cartoon.launch``) and exits with the first failure's code."""
    from cartoon.launch import is_main_process, launch, needs_launch

    params = _load_run(params_path)
    distributed = getattr(params, phase).distributed
    if needs_launch(distributed):
        code = launch(distributed)
        if code:
            raise typer.Exit(code)
        return
    from cartoon.training import PhaseOutputs, run_phase

    metrics = run_phase(phase, params, sets, PhaseOutputs(model_dir, reports, checkpoint), init)  # type: ignore[arg-type]
    if is_main_process():
        console.print(f"{phase}: {metrics['steps']} steps in {metrics['seconds']} s; final losses {metrics['final_loss']}")


_SET = "a .npy image store, or a folder of same-size images"
PhotosOption = Annotated[Path, typer.Option(help=f"training photos: {_SET}")]
CartoonsOption = Annotated[Path, typer.Option(help=f"cartoon images: {_SET}")]
SmoothedOption = Annotated[Path, typer.Option(help=f"edge-smoothed cartoon images: {_SET}")]
CartoonsGrayOption = Annotated[Path, typer.Option(help=f"grayscale cartoon images (methods that use them): {_SET}")]
SmoothedGrayOption = Annotated[Path, typer.Option(help=f"grayscale edge-smoothed cartoons (methods that use them): {_SET}")]
FacePhotosOption = Annotated[Path | None, typer.Option(help=f"face photos, drawn for every face_every-th batch of this phase: {_SET} (empty: none)")]
FaceCartoonsOption = Annotated[Path | None, typer.Option(help=f"face cartoons, paired with --face-photos batches: {_SET} (empty: none)")]


@app.command()
@handle_errors
def pretrain(
    photos: PhotosOption = Path("data/resized/photo/train.npy"),
    cartoons: CartoonsOption = Path("data/resized/cartoon/train.npy"),
    smoothed: SmoothedOption = Path("data/smoothed/train.npy"),
    cartoons_gray: CartoonsGrayOption = Path("data/gray/cartoon.npy"),
    smoothed_gray: SmoothedGrayOption = Path("data/gray/smooth.npy"),
    face_photos: FacePhotosOption = None,
    face_cartoons: FaceCartoonsOption = None,
    out: Annotated[Path, typer.Option(help="folder for generator.safetensors + generator.json")] = Path("models/pretrain"),
    reports: Annotated[Path, typer.Option(help="folder for metrics.json, losses.csv, mlflow_run.json")] = Path("reports/pretrain"),
    checkpoint: Annotated[Path, typer.Option(help="resumable state; resumed if inputs and params are unchanged")] = Path("checkpoints/pretrain.pt"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Initialisation phase: train the generator on the content loss alone (resumes after a kill)."""
    sets = {"photo": photos, "cartoon": cartoons, "smooth": smoothed, "cartoon_gray": cartoons_gray, "smooth_gray": smoothed_gray,
            "face_photo": face_photos, "face_cartoon": face_cartoons}
    _phase("pretrain", params, sets, out, reports, checkpoint, None)


@app.command()
@handle_errors
def train(
    photos: PhotosOption = Path("data/resized/photo/train.npy"),
    cartoons: CartoonsOption = Path("data/resized/cartoon/train.npy"),
    smoothed: SmoothedOption = Path("data/smoothed/train.npy"),
    cartoons_gray: CartoonsGrayOption = Path("data/gray/cartoon.npy"),
    smoothed_gray: SmoothedGrayOption = Path("data/gray/smooth.npy"),
    face_photos: FacePhotosOption = None,
    face_cartoons: FaceCartoonsOption = None,
    init: Annotated[Path, typer.Option(help="pretrained generator folder")] = Path("models/pretrain"),
    out: Annotated[Path, typer.Option(help="folder for generator.safetensors + generator.json")] = Path("models/train"),
    reports: Annotated[Path, typer.Option(help="folder for metrics.json, losses.csv, mlflow_run.json")] = Path("reports/train"),
    checkpoint: Annotated[Path, typer.Option(help="resumable state; resumed if inputs and params are unchanged")] = Path("checkpoints/train.pt"),
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Adversarial training of the selected method; logs to MLflow and registers the generator."""
    sets = {"photo": photos, "cartoon": cartoons, "smooth": smoothed, "cartoon_gray": cartoons_gray, "smooth_gray": smoothed_gray,
            "face_photo": face_photos, "face_cartoon": face_cartoons}
    _phase("train", params, sets, out, reports, checkpoint, init)


@app.command()
@handle_errors
def evaluate(
    model: Annotated[str, typer.Option(help="generator folder, or models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/generator")] = "models/train",
    photos: Annotated[Path, typer.Option(help="a folder of photos (any size; unreadable files are skipped and listed) or a .npy image store")] = Path("data/resized/photo/test.npy"),
    out: Annotated[Path, typer.Option(help="output folder: images/, grid.png, metrics.json")] = Path("reports/evaluate"),
    mlflow_run: Annotated[str | None, typer.Option(help="MLflow run id, or a mlflow_run.json file, to log the metrics to")] = None,
    faces: Annotated[bool, typer.Option("--faces", help="the photos are aligned face crops: measure faces at the template square (evaluate.faces: aligned)")] = False,
    cartoons: Annotated[Path | None, typer.Option(help="a cartoon set (folder or .npy image store) for FID/KID to cartoons, e.g. data/resized/cartoon/train.npy")] = None,
    references: Annotated[Path | None, typer.Option(help="expected outputs (folder or .npy image store) matched to the photos by file stem: adds PSNR and SSIM")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Cartoonize a folder of photos (or an image store) and measure content kept, cartoon-likeness, faces kept,
    FID/KID to the inputs and to a cartoon set, and PSNR/SSIM against references (see README)."""
    from cartoon.evaluate import evaluate as run

    run_id = mlflow_run
    if mlflow_run and Path(mlflow_run).is_file():
        run_id = json.loads(Path(mlflow_run).read_text())["run_id"]
    loaded = _load_run(params)
    if faces:
        loaded = loaded.model_copy(update={"evaluate": loaded.evaluate.model_copy(update={"faces": "aligned"})})
    metrics = run(model, photos, out, loaded, run_id, cartoons, references)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
@handle_errors
def compare(
    models: Annotated[list[str], typer.Argument(help="two or more: DVC experiment names, MLflow run ids, models:/NAME/VERSION or models:/NAME@ALIAS")],
    photos: Annotated[Path, typer.Option(help="photos every model cartoonizes: a folder or a .npy image store")] = Path("data/resized/photo/test.npy"),
    out: Annotated[Path, typer.Option(help="output folder: compare.html, compare.md, compare.json, images/")] = Path("reports/compare"),
    count: Annotated[int, typer.Option(min=1, help="how many of the photos to show")] = 6,
    max_side: Annotated[int, typer.Option(min=16, help="longer photo side is scaled down to this first")] = 256,
    log: Annotated[bool, typer.Option(help="also log the page to MLflow (experiment 'compare')")] = True,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Compare trained models side by side: the same photos cartoonized by each, the params that differ between
    their training runs and their evaluation metrics, as one page (HTML and Markdown), also logged to MLflow."""
    from cartoon.compare import compare as run

    page = run(models, photos, out, count, max_side, _load(params).resize.max_pixels, log)
    typer.echo(f"compared {len(models)} models on {len(page['photos'])} photos: {out / 'compare.html'}")


_TILE_NOTE = "torch backend only: the onnx backend runs whole images"
#: Default --temporal-strength (README: how it was chosen).
TEMPORAL_STRENGTH = 0.5


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class InferPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Backend(str, Enum):
    torch = "torch"
    onnx = "onnx"


class ExportFormat(str, Enum):
    onnx = "onnx"


@app.command()
@handle_errors
def cartoonize(
    inputs: Annotated[list[Path], typer.Argument(help="photos and videos: image files, video files (.mp4 .mov .mkv .avi .webm .m4v .mpg .mpeg .ts .wmv .flv) and/or folders (searched recursively)", show_default=False)],
    out: Annotated[Path, typer.Option(help="output folder: a PNG per photo, an H.264 MP4 per video, a folder input's layout mirrored under it", show_default=False)],
    model: Annotated[str, typer.Option(help="generator folder, models:/NAME/VERSION, runs:/ID/generator; or an .onnx file from `cartoon export` with --backend onnx")] = "models/train",
    device: Annotated[Device, typer.Option(help="auto: CUDA if available")] = Device.auto,
    precision: Annotated[InferPrecision, typer.Option(help="torch backend: fp32 (the outputs of cartoon evaluate, ONNX and the MLflow model); bf16 weights, channels-last (AnimeGANv2: 2.4-2.6x faster on a CPU with AMX, within 0.03 of fp32 on the [-1, 1] scale; README: Training and inference speed); or auto: bf16 where it is fast (CUDA, a CPU with AMX or AVX512-BF16)")] = InferPrecision.fp32,
    tile: Annotated[int | None, typer.Option(help=f"tile side in pixels; larger photos run in overlapping tiles (default 512; {_TILE_NOTE})", show_default=False)] = None,
    overlap: Annotated[int | None, typer.Option(help=f"pixels shared by neighbouring tiles, cross-faded (default 128; {_TILE_NOTE})", show_default=False)] = None,
    stats_side: Annotated[int | None, typer.Option(help=f"longer side of the whole-image pass that gives the norm statistics (default 1024; {_TILE_NOTE})", show_default=False)] = None,
    backend: Annotated[Backend, typer.Option(help="torch: the trained generator; onnx: an exported .onnx file on onnxruntime")] = Backend.torch,
    max_pixels: Annotated[int, typer.Option(help="decompression-bomb cap (width*height, per video frame too); larger inputs are skipped")] = 40_000_000,
    temporal: Annotated[bool, typer.Option("--temporal/--no-temporal", help="videos: blend each cartoon frame with the previous one, moved along the optical flow of the input frames, where that flow is reliable (less flicker)")] = False,
    temporal_strength: Annotated[float | None, typer.Option(help=f"with --temporal: weight of the previous frame, between 0 and 1 (default {TEMPORAL_STRENGTH})", show_default=False)] = None,
) -> None:
    """Cartoonize photos of any size and videos. Unreadable files are skipped with a reason; the run ends
    with a summary. Exit 2 for usage errors (no inputs, bad model reference), 1 if nothing could be done.

    Videos: every frame is cartoonized like a photo and written as H.264 MP4 (yuv420p; an odd side
    is padded to even) with the same frame count, timestamps and rate; audio is copied as it is
    when MP4 takes its codec, else transcoded to AAC. The summary gives each video's flicker
    figure: the mean absolute difference between each output frame and the previous one moved
    by the input's optical flow, over pixels the flow tracks, beside the same figure
    for the input (lower is steadier). --temporal lowers it by blending along that flow.
    """
    from cartoon.cartoonize import cartoonize_files, plan_jobs, report, resolve_device, torch_cartoonizer
    from cartoon.tiling import TileSettings

    if temporal_strength is not None and not (temporal and 0 < temporal_strength < 1):
        raise UsageError(f"--temporal-strength must lie between 0 and 1 (exclusive) and needs --temporal, got {temporal_strength}")
    jobs = plan_jobs(inputs, out)
    if not jobs:
        raise UsageError(f"no images or videos in {', '.join(map(str, inputs))}")
    tiling = {"tile": tile, "overlap": overlap, "stats_side": stats_side}
    if backend is Backend.onnx:
        from cartoon.onnx_export import OnnxCartoonizer

        given = [f"--{key.replace('_', '-')}" for key, value in tiling.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: the onnx backend runs whole images (tiling is for the torch backend)")
        if precision is InferPrecision.bf16:
            raise UsageError("--precision bf16: the onnx backend runs the exported fp32 graph (bf16 is for the torch backend)")
        run = OnnxCartoonizer(Path(model), device.value)
    else:
        settings = TileSettings(**{key: value for key, value in tiling.items() if value is not None})
        run = torch_cartoonizer(model, settings, resolve_device(device.value), precision.value)
    strength = (temporal_strength or TEMPORAL_STRENGTH) if temporal else None
    report(cartoonize_files(jobs, run, max_pixels, strength), out)


@app.command()
@handle_errors
def export(
    model: Annotated[str, typer.Argument(help="generator folder, or models:/NAME/VERSION (the file is then logged to that version's run)", show_default=False)],
    out: Annotated[Path, typer.Option(help=".onnx file to write", show_default=False)],
    file_format: Annotated[ExportFormat, typer.Option("--format", help="export format")] = ExportFormat.onnx,
    tolerance: Annotated[float, typer.Option(help="max abs difference to PyTorch ([-1, 1] scale) that onnxruntime may show")] = 1e-3,
) -> None:
    """Export a trained generator with its method's inference step (dynamic height and width), checked against PyTorch."""
    from cartoon.onnx_export import export_model

    typer.echo(json.dumps(export_model(model, out, tolerance), indent=2))


@app.command()
@handle_errors
def methods() -> None:
    """List the registered methods with their references and params keys."""
    from cartoon.methods import available_methods

    for name, method in available_methods().items():
        typer.echo(f"{name}: {method.title}. {method.reference}")
        for group, group_field in method.Params.model_fields.items():
            for key, field in group_field.annotation.model_fields.items():
                typer.echo(f"    {name}.{group}.{key} = {field.default!r}  {field.description or ''}")


@app.command()
@handle_errors
def web(
    model: Annotated[list[str] | None, typer.Option(help="a model to offer besides the registered cartoon-* aliases (repeatable): generator folder, models:/NAME/VERSION, models:/NAME@ALIAS; the first is preselected", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 lets other machines upload photos to this one")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the page")] = 7860,
    device: Annotated[Device, typer.Option(help="auto: CUDA if available")] = Device.auto,
    max_pixels: Annotated[int, typer.Option(help="decompression-bomb cap (width*height); larger uploads are refused")] = 40_000_000,
) -> None:
    """Serve a page to try the models in a browser: upload a photo, pick a model, see the cartoon,
    download it as PNG. Needs Gradio (the project's web extra). Runs until Ctrl-C."""
    from cartoon.cartoonize import resolve_device
    from cartoon.web import serve

    serve(model or [], host, port, resolve_device(device.value), max_pixels)


class Mode(str, Enum):
    max = "max"
    min = "min"


@app.command()
@handle_errors
def promote(
    reference: Annotated[str, typer.Argument(help="the version to promote: models:/NAME/VERSION or models:/NAME@ALIAS (e.g. @candidate)")],
    alias: Annotated[str, typer.Option(help="the alias to move")] = "champion",
    metric: Annotated[str | None, typer.Option(help="move only if this run metric beats the current holder's, e.g. eval/content/luminance_ssim")] = None,
    mode: Annotated[Mode, typer.Option(help="with --metric: max = higher is better, min = lower is better")] = Mode.max,
) -> None:
    """Point a registry alias (champion) at a model version, always or when a metric beats the current holder's."""
    from cartoon.registry import promote as run

    decision = run(reference, alias, metric, mode.value)
    verb = "now points at" if decision.promoted else "stays at"
    typer.echo(f"{decision.name}@{decision.alias} {verb} version {decision.holder}")
    typer.echo(json.dumps(decision.as_dict(), indent=2))


@app.command("check-params")
@handle_errors
def check_params(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate a params file and print the resolved values of the selected method."""
    from cartoon.methods import flat_params

    typer.echo(json.dumps(flat_params(_load_run(params)), indent=2))


if __name__ == "__main__":
    app()
