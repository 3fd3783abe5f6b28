"""``veil protect``: files, photos and folders (through the batch engine), or one live source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from veil import __version__
from veil.batch import output_folder, plan_jobs, run_jobs
from veil.cli.app import app, write_json
from veil.console import command, err, fail, print_error
from veil.detect import TrackerConfig, detector_names
from veil.errors import InputError, VeilError
from veil.media.preview import Preview
from veil.media.sinks import is_live_target
from veil.media.sources import MAX_PIXELS, is_live
from veil.media.write import EncodeOptions, check_output_path
from veil.pipeline import ProtectOptions, Summary
from veil.pipeline.options import LiveOptions
from veil.pipeline.live import LIVE_LOOKAHEAD, protect_live
from veil.protect import protector_names, protector_options

__all__ = ["protect", "parse_option"]


def parse_option(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
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
    inputs: Annotated[list[str], typer.Argument(help="Video files, photos or folders (searched recursively); or one live source: a stream URL (rtsp://, rtmp://, srt://, udp://, tcp://, http(s):// incl. HLS), a camera (/dev/video0, camera:0) or - (a pipe).")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Output file, or folder for several inputs / a folder input (default: <name>_protected.<ext> beside the input); live: a file, a stream URL (rtmp://, rtsp://, srt://, udp://, tcp://), an HLS playlist (out/index.m3u8) or - (MPEG-TS to stdout).")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help=f"Protection: {', '.join(protector_names())}.")] = "blur",
    targets: Annotated[str, typer.Option(help="What to find and protect, comma-separated: faces, people (their silhouettes); plates has no detector yet.")] = "faces",
    people_threshold: Annotated[float, typer.Option(help="--targets people: person score that counts (lower finds more people, and more things that are not).")] = ProtectOptions.people_threshold,
    detector: Annotated[str, typer.Option(help=f"Face detector: {', '.join(detector_names())}.")] = "centerface",
    threshold: Annotated[Optional[float], typer.Option(help="Detection score threshold (lower finds more faces).")] = None,
    detect_size: Annotated[int, typer.Option(help="Longest side, in pixels, of the frame the detector sees (0: full size; smaller is faster but loses small faces).")] = ProtectOptions.detect_size,
    photo_detect_size: Annotated[int, typer.Option(help="The same for photos (one detection each; 0: full size).")] = ProtectOptions.photo_detect_size,
    detect_every: Annotated[int, typer.Option(help="Run the detector on every N-th frame (1-3) and on scene cuts; the tracker interpolates the frames between.")] = ProtectOptions.detect_every,
    track_regions: Annotated[bool, typer.Option("--track-regions/--no-track-regions", help="Between whole looks (every --lookahead + 1 frames), look only around the tracked faces (--no-track-regions: every look is whole).")] = ProtectOptions.track_regions,
    detector_precision: Annotated[str, typer.Option(help="CenterFace's precision: int8 (2-2.5x faster on CPUs with 8-bit dot products) or fp32.")] = ProtectOptions.detector_precision,
    device: Annotated[str, typer.Option(help="Where the detector and the other ONNX Runtime networks run: cpu, cuda[:N] (needs veil[gpu]) or auto (a GPU where there is one).")] = ProtectOptions.device,
    mask_scale: Annotated[Optional[float], typer.Option(help="Mask size relative to the face box.")] = None,
    mask_shape: Annotated[Optional[str], typer.Option(help="ellipse or box.")] = None,
    strength: Annotated[Optional[float], typer.Option(help="blur: strength (1: sigma = face size / 6).")] = None,
    blocks: Annotated[Optional[int], typer.Option(help="mosaic: cells across the face.")] = None,
    block_pixels: Annotated[Optional[int], typer.Option(help="mosaic: fixed cell size in pixels (QM-VAE: 8).")] = None,
    color: Annotated[Optional[str], typer.Option(help="solid: fill colour R,G,B.")] = None,
    noise_scale: Annotated[Optional[float], typer.Option(help="noise: Laplace scale in 8-bit pixel units.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-O", metavar="KEY=VALUE", help="Any option of the method as key=value (repeatable).")] = None,
    cloak_mode: Annotated[Optional[str], typer.Option(help="cloak: low, mid (default) or high: DSSIM budget 0.007, 0.0085, 0.01; high also averages over 4 wider attacker views a step (slower, transfers further).")] = None,
    cloak_recognizers: Annotated[Optional[str], typer.Option(help="cloak: the recognizers it is optimised against, comma-separated (default dlib,faceres,faceres-deep,mobilefacenet).")] = None,
    no_reuse: Annotated[bool, typer.Option("--no-reuse", help="cloak: start every frame from scratch (the paper's baseline).")] = False,
    checkpoint: Annotated[Optional[Path], typer.Option(help="qmvae: model checkpoint (default: the shipped one).")] = None,
    cloak_targets: Annotated[Optional[Path], typer.Option(help="cloak: folder of photos of other people to add to the target bank.")] = None,
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
    lookahead: Annotated[Optional[int], typer.Option(help="Frames the tracker holds back to fill gaps and draw new faces back; a whole look comes at least every N + 1 frames (default 15; live 1: each adds one frame of delay).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Treat the input as live (implied for stream URLs, cameras, - and live sinks).")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Live: the input is a file still being written; read it as it grows.")] = False,
    when_late: Annotated[str, typer.Option(help="Live: a frame that waited longer than --max-delay is sent fully masked (mask) or dropped (drop).")] = "mask",
    max_delay: Annotated[float, typer.Option(help="Live: seconds a frame may wait before it counts as late.")] = 0.5,
    reconnect: Annotated[int, typer.Option(help="Live: times to reopen a source that stalls or drops (with backoff; 0: the stream ends).")] = 0,
    stall_timeout: Annotated[float, typer.Option(help="Live: seconds a network source may send nothing before it counts as stalled.")] = 10.0,
    preview: Annotated[Optional[int], typer.Option(help="Live: serve the protected frames as MJPEG on http://127.0.0.1:PORT/ (0: any free port).")] = None,
    on_error: Annotated[str, typer.Option(help="When detection or protection fails on a frame: mask (whole frame masked) or stop.")] = "mask",
    max_pixels: Annotated[int, typer.Option(help="Refuse photos and videos larger than this many pixels, before decoding them (0: no limit).")] = MAX_PIXELS,
    on_damage: Annotated[str, typer.Option(help="Frames of a damaged stretch of the file (decoded past the damage, as FFmpeg does): mask (whole frame masked), protect (like any frame) or stop (refuse the file).")] = "mask",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (or Ray actors), each loading the models once.")] = 1,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray (local unless --ray-address); needs veil[ray].")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (implies --ray).")] = None,
    segment_seconds: Annotated[Optional[float], typer.Option(help="Cut long videos at keyframes into segments of at least this many seconds, protected in parallel.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads per worker (default: the cores shared evenly).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Skip the files the output folder's manifest records as done (--no-resume: redo them).")] = True,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write a JSON summary here.")] = None,
    export_tracks: Annotated[Optional[Path], typer.Option(help="Write every box per frame (track, kind, score, detected or filled, kept) to FILE.json or FILE.csv; a folder: one <name>.tracks.json per input.")] = None,
    export_masks: Annotated[Optional[Path], typer.Option(help="Write every frame's protection mask as PNG into DIR/<name>/.")] = None,
    review: Annotated[Optional[Path], typer.Option(help="Protect exactly the boxes of a `veil review` sidecar (NAME.veil-review.json); nothing is detected.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only detect and summarise; write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Protect every face in every frame; sound kept, metadata dropped, input never touched."""
    is_live_run = live or follow or any(is_live(i) for i in inputs) or (output is not None and is_live_target(output))
    method_options: dict[str, Any] = {
        "mask_scale": mask_scale, "mask_shape": mask_shape, "strength": strength, "blocks": blocks,
        "block_pixels": block_pixels, "color": _color(color), "noise_scale": noise_scale,
        "mode": cloak_mode, "reuse": False if no_reuse else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "targets_dir": str(cloak_targets) if cloak_targets else None,
        "recognizers": cloak_recognizers,
        "image": str(sticker_image) if sticker_image else None,
    }
    defaults = protector_options(method)
    for text in option or []:
        key, value = parse_option(text, defaults)
        method_options[key] = value
    options = ProtectOptions(
        method=method, method_options=method_options, targets=targets, people_threshold=people_threshold,
        detector=detector, threshold=threshold,
        detect_size=detect_size or None, photo_detect_size=photo_detect_size or None,
        detect_every=detect_every, track_regions=track_regions, detector_precision=detector_precision, device=device,
        on_detection_error=on_error, on_damage=on_damage,
        max_pixels=max_pixels or None, seed=seed, dry_run=dry_run,
        keep_faces=tuple(keep_face or ()), keep_distance=keep_distance,
        tracker=TrackerConfig(max_missing=max_missing, lookahead=lookahead if lookahead is not None else
                              LIVE_LOOKAHEAD if is_live_run else TrackerConfig.lookahead),
        encode=EncodeOptions(codec=codec, crf=crf, preset=preset, keep_audio=not no_audio,
                             keep_metadata=keep_metadata),
        export_tracks=str(export_tracks) if export_tracks else None,
        export_masks=str(export_masks) if export_masks else None,
        review=str(review) if review else None,
    )
    protector = options.build_protector()  # bad method options fail now, before any file is opened
    options.build_known()  # and so does a --keep-face photo without exactly one face
    if is_live_run:
        live_options = LiveOptions(when_late=when_late, max_delay_s=max_delay, reconnect=reconnect,
                                   stall_s=stall_timeout)
        _protect_live(inputs, output, options, live_options, follow, preview, json_path, protector, quiet)
    paths = [Path(i) for i in inputs]
    out_path = None if output is None else Path(output)
    jobs_list, skipped = plan_jobs(paths, out_path, dry_run=dry_run)
    for path in skipped:
        err.print(f"[yellow]skipped[/yellow] {path} (neither a video nor a photo)", highlight=False)
    if not jobs_list:
        fail("no videos or photos to protect")
    _check_exports(options, jobs_list, segment_seconds)
    if options.review is not None and len(jobs_list) > 1:
        fail(InputError("--review belongs to one video: give that video alone"))
    try:
        report = run_jobs(jobs_list, options, console=err, show_progress=not quiet, workers=jobs,
                          use_ray=ray or ray_address is not None, ray_address=ray_address,
                          manifest=output_folder(paths, out_path, dry_run=dry_run), resume=resume,
                          segment_seconds=segment_seconds, threads=threads, protector=protector)
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        raise typer.Exit(130) from None
    if report.resumed:
        err.print(f"{len(report.resumed)} files already done (manifest), skipped", highlight=False)
    if json_path is not None:
        write_json(json_path, report.to_dict())
    for job, message in report.errors:
        print_error(message)
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


def _check_exports(options: ProtectOptions, jobs: list, segment_seconds: float | None) -> None:
    """Refuse exports that would land on one another, or that segments cannot give."""
    if not (options.export_tracks or options.export_masks):
        return
    if segment_seconds is not None:
        fail(InputError("--export-tracks and --export-masks need whole files: drop --segment-seconds"))
    if len(jobs) > 1:
        if options.export_tracks and Path(options.export_tracks).suffix.lower() in (".json", ".csv"):
            fail(InputError(f"--export-tracks {options.export_tracks}: one file for {len(jobs)} inputs; "
                            "give a folder (one <name>.tracks.json each)"))
        stems = [job.src.stem for job in jobs]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            fail(InputError(f"--export-tracks/--export-masks name files after the inputs, and several are "
                            f"called {twice[0]!r}; export them in separate runs"))


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


def _live_status(summary: Summary, live: LiveOptions) -> str:
    lat, late = summary.latency_ms, summary.frames_masked_late + summary.frames_dropped_late
    text = f"live {summary.input}: {summary.frames} frames, {summary.faces} faces"
    if lat:
        text += f", latency p50 {lat['p50']:.0f} / p95 {lat['p95']:.0f} ms"
    if late:
        text += f", {late} late frames {'masked' if live.when_late == 'mask' else 'dropped'}"
    return text + (f", {summary.reconnects} reconnections" if summary.reconnects else "")


def _protect_live(inputs: list[str], output: str | None, options: ProtectOptions, live: LiveOptions, follow: bool,
                  preview_port: int | None, json_path: Path | None, protector: Any, quiet: bool) -> None:
    """``veil protect SOURCE -o SINK`` for a live source: runs until the source ends or Ctrl-C,
    a status line (frames, the latency of the last 10 s, late frames) kept up to date meanwhile."""
    if len(inputs) != 1:
        fail("a live run takes one source")
    if output is None and preview_port is None:
        fail("a live source needs -o SINK: a file, a stream URL, an HLS playlist (out/index.m3u8) or -")
    if output is not None and not is_live_target(output):
        check_output_path(Path(inputs[0]), Path(output))
    viewer = Preview(preview_port) if preview_port is not None else None
    if viewer is not None:
        err.print(f"preview: {viewer.url}", highlight=False)
    line = None if quiet else err.status(f"live {inputs[0]}: waiting for frames", spinner="dots")
    try:
        if line is not None:
            line.start()
        summary = protect_live(inputs[0], output, options, live, follow=follow, protector=protector, preview=viewer,
                               status=None if line is None else lambda s: line.update(_live_status(s, live)))
    finally:
        if line is not None:
            line.stop()
        if viewer is not None:
            viewer.close()
    if json_path is not None:
        write_json(json_path, {"veil_version": __version__, "files": [summary.to_dict()], "failed": []})
    lat = summary.latency_ms
    latency = f", latency p50 {lat['p50']:.0f} / p95 {lat['p95']:.0f} / max {lat['max']:.0f} ms" if lat else ""
    late = summary.frames_masked_late + summary.frames_dropped_late
    late_note = f", {late} late frames {'masked' if live.when_late == 'mask' else 'dropped'}" if late else ""
    err.print(f"[green]{'stopped' if summary.interrupted else 'done'}[/green] {summary.input} -> "
              f"{summary.output or '(preview)'}: {summary.frames} frames, {summary.faces} faces{latency}{late_note}"
              + (f", {summary.reconnects} reconnections" if summary.reconnects else ""), highlight=False)
    if summary.decode_errors or summary.frames_damaged:
        err.print(f"[yellow]damaged[/yellow] {summary.input}: {_damage_note(summary, options.on_damage)}",
                  highlight=False)
    if summary.stream_error:
        fail(VeilError(f"the source {summary.input!r} ended early: {summary.stream_error}"))
    raise typer.Exit(0)
