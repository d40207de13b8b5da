"""`cartoon web`: a page to try the trained models: upload a photo, pick a model, see the photo and
its cartoon side by side, download the cartoon as a PNG.

Gradio builds the page (the convention of this field's demos). It is an optional extra
(``pip install -e '.[web]'``), so it is imported only here and only when the page starts.
Everything that is not layout lives in ``Cartoonist``, which works and is tested without Gradio.

The page runs what ``cartoon cartoonize`` runs: the method's inference step, tiled for any size
(``cartoon.cartoonize.torch_cartoonizer``), and decodes uploads as untrusted input with the same
rules (``decode_image``), so a bad file gets its reason in the page instead of a traceback.

Nothing leaves the machine: Gradio's analytics and version check are switched off before it is
imported, the default theme's fonts are bundled with Gradio, no share link is made, and the page
binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from cartoon import tracking
from cartoon.data.imageio import ImageRejected, decode_image, write_png
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.tiling import TileSettings

#: Registered models whose aliases the page offers (`tracking.registered_name`).
REGISTERED_PREFIX = "cartoon-"
#: Aliases listed first, in this order; any others follow alphabetically.
ALIAS_ORDER = ("champion", "candidate")
#: Set before Gradio is imported: it reads them at import time.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
}
#: Buttons on the two images; Gradio's "share" one would upload to the Hugging Face Hub.
OUTPUT_BUTTONS = ["download", "fullscreen"]
#: How long a result PNG is kept (a long-running page would otherwise keep every one).
KEEP_RESULTS_S = 3600
#: Uploads larger than this are refused by Gradio before they reach the page's code.
MAX_UPLOAD = "200mb"
INSTALL_HINT = (
    "the web page needs Gradio: pip install -e '.[web]' (or pip install 'gradio>=6,<7')"
)


def registered_choices() -> list[str]:
    """``models:/NAME@ALIAS`` for every alias of every registered ``cartoon-*`` model in the
    tracking store: the page offers models by alias, so it follows ``cartoon promote``."""
    tracking.configure()
    client = mlflow.MlflowClient()
    found, token = [], None
    try:
        while True:
            page = client.search_registered_models(
                filter_string=f"name LIKE '{REGISTERED_PREFIX}%'", page_token=token
            )
            found += page
            token = page.token
            if not token:
                break
    except mlflow.exceptions.MlflowException as exc:
        raise RuntimeFailure(
            f"cannot list the registered models in {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None

    def rank(alias: str) -> tuple[int, str]:
        return (
            ALIAS_ORDER.index(alias) if alias in ALIAS_ORDER else len(ALIAS_ORDER),
            alias,
        )

    return [
        f"models:/{model.name}@{alias}"
        for model in sorted(found, key=lambda model: model.name)
        for alias in sorted(model.aliases, key=rank)
    ]


def check_reference(reference: str) -> None:
    """Refuse, before the page starts, a --model that cannot be found (a usage error) or is not
    a loadable generator (a runtime failure), rather than on the first upload."""
    from cartoon.artifacts import load_cartoonizer
    from cartoon.evaluate import resolve_model

    load_cartoonizer(resolve_model(reference))


@dataclass(frozen=True)
class Result:
    """What the page shows after a run: the photo as decoded, its cartoon, the PNG to download,
    and a one-line message (the reason, when the upload could not be used)."""

    message: str
    photo: np.ndarray | None = None
    cartoon: np.ndarray | None = None
    png: Path | None = None


class Cartoonist:
    """The page's work, without the page: decode an upload, run the chosen model, write the PNG.

    Models are loaded on first use and kept, one per choice of the dropdown. A registry alias is
    resolved to its version on every run, so an alias moved while the page is up is followed: the
    version it left is dropped rather than kept in memory for the life of the page.
    """

    def __init__(
        self,
        settings: TileSettings,
        device: torch.device,
        max_pixels: int,
        out_dir: Path,
    ) -> None:
        self.settings, self.device = settings, device
        self.max_pixels, self.out_dir = max_pixels, out_dir
        self._models: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}  # choice: (version, model)
        # One load per model, even when two requests ask at once.
        self._lock = threading.Lock()

    def model(self, reference: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
        """(the reference with any alias resolved to its version, its cartoonizer)."""
        from cartoon.cartoonize import torch_cartoonizer
        from cartoon.registry import resolve_version

        resolved = reference
        if reference.startswith("models:/"):
            tracking.configure()
            name, version = resolve_version(mlflow.MlflowClient(), reference)
            resolved = f"models:/{name}/{version}"
        with self._lock:
            loaded = self._models.get(reference)
            if loaded is None or loaded[0] != resolved:
                loaded = self._models[reference] = (resolved, torch_cartoonizer(resolved, self.settings, self.device))
            return loaded

    def run(self, upload: str | None, reference: str | None) -> Result:
        """Cartoonize the uploaded file with the model ``reference``; never raises for a bad upload."""
        if not upload:
            return Result("Upload a photo first.")
        if not reference:
            return Result("Pick a model first.")
        name = Path(upload).name
        try:
            photo = decode_image(Path(upload).read_bytes(), self.max_pixels)
        except ImageRejected as exc:
            return Result(f"Cannot use {name}: {exc.reason}.")
        except OSError as exc:
            return Result(f"Cannot read {name}: {exc.strerror or type(exc).__name__}.")
        try:
            resolved, cartoonize = self.model(reference)
        except (UsageError, RuntimeFailure) as exc:
            return Result(f"Cannot load {reference}: {exc}")
        start = time.perf_counter()
        cartoon = cartoonize(photo)
        seconds = time.perf_counter() - start
        # A folder per run: two visitors uploading photo.jpg never get each other's cartoon.
        # Gradio serves its own copy of the file, so older runs' folders can go.
        _remove_older_than(self.out_dir, KEEP_RESULTS_S)
        png = (
            Path(tempfile.mkdtemp(dir=self.out_dir)) / f"{_safe_stem(name)}-cartoon.png"
        )
        write_png(png, cartoon)
        shown = (
            reference
            if resolved == reference
            else f"{reference} (version {resolved.rsplit('/', 1)[1]})"
        )
        height, width = photo.shape[:2]
        return Result(
            f"{width}x{height} photo cartoonized with {shown} in {seconds:.1f} s.",
            photo,
            cartoon,
            png,
        )


def _remove_older_than(folder: Path, seconds: float) -> None:
    """Delete the run folders in ``folder`` last changed more than ``seconds`` ago."""
    limit = time.time() - seconds
    for run_dir in folder.iterdir():
        if run_dir.is_dir() and run_dir.stat().st_mtime < limit:
            shutil.rmtree(run_dir, ignore_errors=True)


def _safe_stem(name: str) -> str:
    """The upload's name without its suffix, reduced to characters safe in any file system."""
    return re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._") or "photo"


def import_gradio() -> Any:
    """Gradio with its telemetry switched off; a usage error saying how to install it when missing."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    try:
        import gradio
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return gradio


def build_page(cartoonist: Cartoonist, choices: list[str]) -> Any:
    """The Gradio page: upload and model on top, photo and cartoon side by side, the PNG below."""
    gr = import_gradio()

    def run(upload: str | None, reference: str | None) -> tuple[Any, Any, Any, str]:
        result = cartoonist.run(upload, reference)
        png = str(result.png) if result.png else None
        return result.photo, result.cartoon, png, result.message

    # delete_cache: Gradio's copies of uploads and results older than an hour go, checked hourly.
    with gr.Blocks(
        title="cartoon", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as page:
        gr.Markdown(
            "## cartoon: try a trained model\n"
            "Upload a photo (any size), pick a model, press **Cartoonize**. "
            "The cartoon is computed as `cartoon cartoonize` computes it."
        )
        with gr.Row():
            upload = gr.File(label="Photo", type="filepath", elem_id="upload")
            with gr.Column():
                model = gr.Dropdown(
                    choices=choices, value=choices[0], label="Model", elem_id="model"
                )
                button = gr.Button("Cartoonize", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            photo = gr.Image(
                label="Photo",
                format="png",
                interactive=False,
                buttons=OUTPUT_BUTTONS,
                elem_id="photo",
            )
            cartoon = gr.Image(
                label="Cartoon",
                format="png",
                interactive=False,
                buttons=OUTPUT_BUTTONS,
                elem_id="cartoon",
            )
        download = gr.File(
            label="Download the cartoon (PNG)", interactive=False, elem_id="download"
        )
        button.click(run, [upload, model], [photo, cartoon, download, status])
    return page


def serve(
    references: list[str], host: str, port: int, device: torch.device, max_pixels: int
) -> None:
    """Start the page and block until interrupted. The dropdown lists ``references`` (checked
    first; the first is preselected) and then the registered ``cartoon-*`` aliases; no model at
    all is a usage error. Photos run with `cartoonize`'s default tiles."""
    import_gradio()  # before any other work: a missing extra is the first thing to say
    for reference in references:
        check_reference(reference)
    choices = list(dict.fromkeys([*references, *registered_choices()]))
    if not choices:
        raise UsageError(
            f"no model to offer: no registered {REGISTERED_PREFIX}* model has an alias in "
            f"{mlflow.get_tracking_uri()}, and no --model was given"
        )
    with tempfile.TemporaryDirectory(prefix="cartoon-web-") as out_dir:
        page = build_page(
            Cartoonist(TileSettings(), device, max_pixels, Path(out_dir)), choices
        )
        try:
            page.launch(
                server_name=host,
                server_port=port,
                share=False,
                inbrowser=False,
                ssr_mode=False,
                max_file_size=MAX_UPLOAD,
            )
        # The port is taken, or the host is not an address of this machine.
        except OSError as exc:
            raise UsageError(
                f"cannot serve on {host}:{port} (port in use? pick another with --port): {exc}"
            ) from None
