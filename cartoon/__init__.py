"""cartoon: a reproducible photo-to-cartoon GAN pipeline (DVC stages, MLflow tracking, Typer CLI)."""

__version__ = "0.1.0"
