"""``veil evaluate ORIGINAL PROTECTED``: the command function (registered by veil's main CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from veil.console import command, err
from veil.errors import InputError

__all__ = ["evaluate_command"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@command
def evaluate_command(
    original: Annotated[Path, typer.Argument(help="The original video, or a folder of images.")],
    protected: Annotated[Path, typer.Argument(help="The protected video (or folder) with the same frames.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full report (JSON) here.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report here.")] = None,
    detector: Annotated[str, typer.Option(help="Detector that finds the faces on the original.")] = "centerface",
    detectors: Annotated[str, typer.Option(help="Detectors asked to find the faces on the protected "
                                                 "video, comma-separated (centerface,mtcnn).")] = "centerface",
    recognizers: Annotated[str, typer.Option(help="Recognizers, comma-separated (dlib,faceres,faceres-deep,mobilefacenet).")] = "dlib,faceres,faceres-deep,mobilefacenet",
    expressions: Annotated[bool, typer.Option(help="Measure whether the top expression is kept.")] = True,
    mask_scale: Annotated[float, typer.Option(help="Face mask = face box grown by this factor.")] = 1.3,
    max_frames: Annotated[Optional[int], typer.Option(help="Evaluate only the first N frames.")] = None,
    attack: Annotated[bool, typer.Option("--attack", help="Also run the cloak attack protocol: train on the "
                                                          "protected faces, test on clean unseen ones.")] = False,
    attack_classifier: Annotated[str, typer.Option(help="The attacker's classifier: knn or linear.")] = "knn",
    attack_pipeline: Annotated[str, typer.Option(help="Whose pipeline attacks, comma-separated: veil (the "
                                                      "--recognizers through veil's detector and crops) and/or dlib "
                                                      "(dlib's own library end to end: HOG detector, shape "
                                                      "predictor, face chip, ResNet, 1-NN). Implies --attack.")] = "veil",
    attack_clean: Annotated[Optional[Path], typer.Option(help="Other clean footage of the same person (a video, "
                                                              "photo or folder) to test the attacker on, instead "
                                                              "of the later frames of the same video.")] = None,
) -> None:
    """Measure how well PROTECTED hides the people of ORIGINAL, and what it keeps."""
    from rich.progress import Progress

    from veil.evaluate.report import write_html
    from veil.evaluate.run import EvaluateConfig, WorstFrames, count_frames, evaluate

    if attack_classifier not in ("knn", "linear"):
        raise InputError(f"--attack-classifier must be knn or linear, not {attack_classifier!r}")
    pipelines = _names(attack_pipeline)
    if not pipelines or set(pipelines) - {"veil", "dlib"}:
        raise InputError(f"--attack-pipeline must name veil and/or dlib, not {attack_pipeline!r}")
    if attack_clean is not None and not attack_clean.exists():
        raise InputError(f"--attack-clean: '{attack_clean}' does not exist")
    attack = attack or pipelines != ("veil",) or attack_clean is not None
    for out in (json_out, html_out):
        if out is not None and not out.parent.exists():
            raise InputError(f"cannot write '{out}': folder '{out.parent}' does not exist")
    config = EvaluateConfig(detector=detector, detectors=_names(detectors), recognizers=_names(recognizers),
                            expressions=expressions, mask_scale=mask_scale, max_frames=max_frames,
                            attack=attack_classifier if attack else None, attack_pipelines=pipelines,
                            attack_clean=str(attack_clean) if attack_clean is not None else None)
    worst = WorstFrames() if html_out is not None else None
    total = count_frames(original)
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("evaluating", total=total)
        report = evaluate(original, protected, config, progress=lambda n: bar.update(task, completed=n),
                          worst=worst)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=1))
    if html_out is not None:
        write_html(html_out, report, worst)
    s = report["summary"]
    lines = [f"frames {s['frames']}, faces {s['face_frames']} in {s['tracks']} tracks, {s['frames_per_second']} frames/s"]
    lines += [f"faces detected after ({d}): {v}" for d, v in s["faces_detected_after"].items()]
    lines += [f"re-identification rate ({r}): {v}  mean distance {s['mean_descriptor_distance'][r]}"
              for r, v in s["reidentification_rate"].items()]
    lines += [f"SSIM {s['ssim']} (outside faces {s['ssim_outside_faces']}), PSNR {s['psnr']} dB "
              f"(outside faces {s['psnr_outside_faces']}), expression agreement {s['expression_agreement']}, "
              f"flicker {s['flicker']}"]
    for name, a in report.get("attack", {}).items():
        lines.append(f"attack ({name}, {a['classifier']}): protection success {a['protection_success']} "
                     f"on {a['test_clean_faces']} clean faces")
    if "attack_dlib" in report:
        a = report["attack_dlib"]
        lines.append(f"attack (dlib's library end to end, 1-NN): protection success {a['protection_success']} "
                     f"on {a['test_faces']} clean faces ({a['test_source']})")
    typer.echo("\n".join(lines))
