"""MLflow pyfunc entry point for a registered cartoon generator (logged as code, not a pickle).

``mlflow.pyfunc.load_model("models:/cartoon-cartoongan/1").predict(images)`` with uint8 RGB
arrays shaped (N, H, W, 3) or (H, W, 3) of any size returns cartoonized uint8 arrays. Large
images run in tiles with whole-image norm statistics (``cartoon.tiling``), as `cartoon cartoonize` does.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np


class CartoonGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from cartoon.artifacts import load_cartoonizer
        from cartoon.tiling import TiledCartoonizer

        generator, config = load_cartoonizer(Path(context.artifacts["weights"]))
        self.cartoonize = TiledCartoonizer(generator, config["size_multiple"])

    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input, dtype=np.uint8)
        single = images.ndim == 3
        batch = images[None] if single else images
        out = np.stack([self.cartoonize(img) for img in batch])
        return out[0] if single else out


mlflow.models.set_model(CartoonGenerator())
