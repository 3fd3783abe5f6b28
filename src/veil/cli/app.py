"""The `veil` command's typer apps, and what several commands share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

__all__ = ["app", "models_app", "train_app", "write_json"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Protect the people in a video.")
models_app = typer.Typer(no_args_is_help=True, help="The pretrained models veil uses (fetched from package registries).")
app.add_typer(models_app, name="models")
train_app = typer.Typer(no_args_is_help=True, help="Train veil's learned models (--default: the shipped ones).")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
