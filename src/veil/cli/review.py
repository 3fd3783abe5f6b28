"""``veil review``: detect and track a video once, then check and fix the result in the browser."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from veil.cli.protect import _color, parse_option
from veil.console import command, err
from veil.detect import TrackerConfig, detector_names
from veil.errors import InputError
from veil.export.review import sidecar_path
from veil.pipeline import ProtectOptions
from veil.protect import protector_names, protector_options

__all__ = ["review_command"]


@command
def review_command(
    video: Annotated[Path, typer.Argument(help="The video to review.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Where Render writes (default: <name>_reviewed.<ext> beside the video).")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help=f"Protection: {', '.join(protector_names())}.")] = "blur",
    option: Annotated[Optional[list[str]], typer.Option("--option", "-O", metavar="KEY=VALUE", help="Any option of the method as key=value (repeatable).")] = None,
    mask_scale: Annotated[Optional[float], typer.Option(help="Mask size relative to the face box.")] = None,
    color: Annotated[Optional[str], typer.Option(help="solid: fill colour R,G,B.")] = None,
    targets: Annotated[str, typer.Option(help="What to find: faces, people (comma-separated).")] = "faces",
    detector: Annotated[str, typer.Option(help=f"Face detector: {', '.join(detector_names())}.")] = "centerface",
    threshold: Annotated[Optional[float], typer.Option(help="Detection score threshold.")] = None,
    detect_every: Annotated[int, typer.Option(help="Run the detector on every N-th frame (1-3).")] = ProtectOptions.detect_every,
    device: Annotated[str, typer.Option(help="Where the detector runs: cpu, cuda[:N] (needs veil[gpu]) or auto.")] = ProtectOptions.device,
    seed: Annotated[int, typer.Option(help="Seed of random protections.")] = 0,
    crf: Annotated[int, typer.Option(help="Constant quality of the rendered video.")] = 18,
    host: Annotated[str, typer.Option(help="Address to serve on (default: this machine only; another address opens the page to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 0,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open the page in a browser.")] = False,
) -> None:
    """Check what was protected, fix what was missed, render again: a page on a local server.

    The decisions are saved beside the video as NAME.veil-review.json; Render runs
    `veil protect VIDEO --review NAME.veil-review.json`, which a batch or Ray can run too.
    """
    from veil.media.write import EncodeOptions
    from veil.review.analysis import analyse
    from veil.review.server import ReviewServer

    method_options: dict[str, Any] = {"mask_scale": mask_scale, "color": _color(color)}
    defaults = protector_options(method)
    for text in option or []:
        key, value = parse_option(text, defaults)
        method_options[key] = value
    options = ProtectOptions(method=method, method_options=method_options, targets=targets, detector=detector,
                             threshold=threshold, detect_every=detect_every, device=device, seed=seed, tracker=TrackerConfig(),
                             encode=EncodeOptions(crf=crf))
    if not video.is_file():
        raise InputError(f"{str(video)!r} is not a file")
    protector = options.build_protector()
    found = options.build_detector()
    err.print(f"analysing {video} (once; cached) ...", highlight=False)
    analysis = analyse(video, options, detector=found)
    server = ReviewServer(analysis, options, detector=found, protector=protector, host=host, port=port,
                          output=output)
    err.print(f"review {video}: {server.url}", highlight=False)
    err.print(f"decisions are saved to {sidecar_path(video)}; Ctrl-C stops the server", highlight=False)
    if not no_open:
        webbrowser.open(server.url)
    try:
        server.serve()
    except KeyboardInterrupt:
        err.print("stopped")
    raise typer.Exit(0)
