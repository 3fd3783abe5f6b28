"""STPrivacy's commands: ``veil train action`` (`train_action_command`), and ``veil action
evaluate | predict | make-synthetic`` (`app`), mounted by the main CLI.

Errors go through veil's one error boundary (`veil.console`): one line, exit code 2 for bad
input, 1 for failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from veil.action.config import PRESETS, preset
from veil.action.evaluate import ActionReport
from veil.action.evaluate import evaluate as evaluate_model
from veil.action.model import STPrivacy, to_input
from veil.action.source import KINDS, open_source
from veil.action.train import StepLog, TrainConfig, init_from, load_checkpoint, save_checkpoint
from veil.action.train import train as train_model
from veil.console import command
from veil.console import err as console
from veil.errors import InputError

app = typer.Typer(help="Privacy-preserving action recognition (STPrivacy): evaluate, predict, make-synthetic (train: veil train action).",
                  no_args_is_help=True)
DataArg = Annotated[Path | None, typer.Argument(help="Data root (omit for --dataset synthetic).")]
Kind = Annotated[str, typer.Option("--dataset", help=f"One of {', '.join(KINDS)}.")]
Labels = Annotated[Path | None, typer.Option(help="VP privacy labels (CSV or the published pickle); default: "
                                                "the published labels, shipped with veil.")]
Names = Annotated[str, typer.Option(help="Comma-separated attribute names (the VP files do not name them).")]


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@app.command("make-synthetic")
@command
def make_synthetic_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write <action>/<video>.mp4 and labels.json into.")],
    count: Annotated[int, typer.Option(help="Number of videos.")] = 600,
    frames: int = 16, size: int = 64, fps: int = 8, seed: int = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of videos in the test split.")] = 0.25,
) -> None:
    """Write the synthetic benchmark as real videos: motion = action, appearance = private attributes."""
    from veil.action.labels import write_labels_json
    from veil.action.synthetic import ACTIONS, ATTRIBUTES, make_synthetic
    from veil.media.write import EncodeOptions, write_frames

    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    data = make_synthetic(count, frames, size, seed)
    lossless = EncodeOptions(crf=0, pix_fmt="yuv444p", keep_audio=False)  # keep the 1-px face texture
    n_test = max(1, round(count * test_fraction))
    videos = []
    with _progress() as progress:
        task = progress.add_task("writing videos", total=count, info="")
        for i in range(count):
            rel = f"{ACTIONS[data.actions[i]]}/{i:05d}.mp4"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_frames(out / rel, list(data.videos[i]), Fraction(fps), options=lossless)
            videos.append({"path": rel, "action": ACTIONS[data.actions[i]],
                           "attributes": [int(v) for v in data.attributes[i]],
                           "split": "test" if i < n_test else "train"})
            progress.advance(task)
    write_labels_json(out / "labels.json", list(ACTIONS), list(ATTRIBUTES), videos)
    console.print(f"wrote {count} videos and {out / 'labels.json'}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)


@command
def train_action_command(
    data: DataArg = None,
    dataset: Kind = "synthetic",
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write.")] = Path("stprivacy.pt"),
    model_preset: Annotated[str, typer.Option("--preset", help=f"One of {', '.join(PRESETS)}.")] = "small",
    keep_ratio: Annotated[float, typer.Option(help="Fraction of tubelets kept after sparsification.")] = 0.5,
    privacy_weight: Annotated[float, typer.Option(help="Trade-off weight of the adversarial loss.")] = 3.0,
    anonymizer_noise: Annotated[float, typer.Option(
        help="Std of the noise added to the normalised anonymized tokens (0 = none).")] = 2.0,
    encoder_privacy: Annotated[float, typer.Option(
        help="Fraction of the adversarial gradient that reaches the encoder, in [0, 1].")] = 0.0,
    sparsify: Annotated[bool, typer.Option(help="Drop action-irrelevant tubelets (--no-sparsify: keep all).")] = True,
    anonymize: Annotated[bool, typer.Option(help="Anonymize the kept tubelets (--no-anonymize: as they are).")] = True,
    epochs: int = 10, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint's matching weights.")] = None,
    privacy_labels: Labels = None, attribute_names: Names = "", fold: int = 1,
    splits: Annotated[Path | None, typer.Option(help="Folder of the official split files.")] = None,
    synthetic_count: int = 2500, workers: int = 0,
) -> None:
    """Train an STPrivacy model; the checkpoint carries its config."""
    base = preset(model_preset)
    src = open_source(dataset, data, frames=base.frames, size=base.image_size, batch_size=batch_size,
                      privacy_labels=privacy_labels, attribute_names=_names(attribute_names), fold=fold,
                      splits=splits, synthetic_count=synthetic_count, seed=seed, workers=workers)
    if src.unlabelled:
        console.print(f"[yellow]skipped {src.unlabelled} videos without privacy labels[/yellow]")
    cfg = base.with_(num_actions=len(src.actions), num_attributes=len(src.attributes), actions=src.actions,
                     attributes=src.attributes, keep_ratio=keep_ratio, sparsify=sparsify,
                     anonymize=anonymize, anonymizer_noise=anonymizer_noise)
    model = STPrivacy(cfg)
    if init is not None:
        copied = init_from(model, load_checkpoint(init)[0])
        console.print(f"initialised {len(copied)} tensors from {init}")
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, privacy_weight=privacy_weight,
                       encoder_privacy=encoder_privacy, seed=seed)
    steps = -(-src.train_size // batch_size)
    with _progress() as progress:
        task = progress.add_task("training", total=epochs * steps, info="")

        def on_step(log: StepLog) -> None:
            info = " ".join(f"{k} {v:.3f}" for k, v in log.losses.items())
            progress.update(task, advance=1, info=f"epoch {log.epoch + 1}/{epochs} {info}")

        train_model(model, src.train, tcfg, steps, on_step)
    save_checkpoint(output, model, tcfg, {"dataset": dataset})
    acc = _test_top1(model, src.test)
    console.print(f"saved {output}; test action top-1 {acc:.1%} at keep ratio {keep_ratio}")


def _test_top1(model: STPrivacy, batches: Callable) -> float:
    hits = total = 0
    with torch.no_grad():
        for video, action, _ in batches():
            hits += int((model(to_input(video))[0].argmax(1) == action).sum())
            total += len(action)
    return hits / max(total, 1)


def _report_table(report: ActionReport) -> Table:
    table = Table(title="STPrivacy evaluation (privacy: fresh attacker, lower is better)")
    for col in ("attribute", "chance acc", "attacker acc", "attacker F1", "attacker AP"):
        table.add_column(col)
    priv = report.privacy
    if priv is not None:
        for i, name in enumerate(priv.names):
            table.add_row(name, f"{report.chance.accuracy[i]:.3f}", f"{priv.accuracy[i]:.3f}",
                          f"{priv.f1[i]:.3f}", f"{priv.ap[i]:.3f}")
        table.add_row("mean / cMAP", f"{report.chance.mean_accuracy:.3f}", f"{priv.mean_accuracy:.3f}",
                      f"{priv.mean_f1:.3f}", f"{priv.cmap:.3f}")
    return table


@app.command()
@command
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint from `veil train action`.")],
    data: DataArg = None,
    dataset: Kind = "synthetic",
    keep_ratio: Annotated[float | None, typer.Option(help="Deployment keep ratio (default: trained).")] = None,
    strength: Annotated[float, typer.Option(help="Deployment anonymization strength in [0, 1].")] = 1.0,
    attacker_epochs: int = 15, video_attack: bool = True, batch_size: int = 64,
    privacy_labels: Labels = None, attribute_names: Names = "", fold: int = 1,
    splits: Annotated[Path | None, typer.Option(help="Folder of the official split files.")] = None,
    synthetic_count: int = 2500, seed: int = 0, workers: int = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
) -> None:
    """Action top-1, privacy of a fresh attacker (per-attribute accuracy/F1, cMAP), keep ratio, FLOPs."""
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"--strength must be in [0, 1], got {strength}")
    model, _ = load_checkpoint(checkpoint)
    c = model.config
    src = open_source(dataset, data, frames=c.frames, size=c.image_size, batch_size=batch_size,
                      privacy_labels=privacy_labels, attribute_names=_names(attribute_names) or c.attributes,
                      fold=fold, splits=splits, synthetic_count=synthetic_count, seed=seed, workers=workers)
    if len(src.actions) != c.num_actions or len(src.attributes) != c.num_attributes:
        raise InputError(f"{checkpoint} was trained for {c.num_actions} actions / {c.num_attributes} "
                         f"attributes; this data set has {len(src.actions)} / {len(src.attributes)}")
    console.print("fitting fresh attackers on the frozen model's output ...")
    report = evaluate_model(model, src.train, src.test, keep_ratio, strength, attacker_epochs, video_attack)
    console.print(f"action top-1 {report.action_top1:.1%}  keep ratio {report.keep_ratio:.3f}  "
                  f"GFLOPs {report.gflops:.4f}")
    Console().print(_report_table(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=1))


@app.command()
@command
def predict(
    video: Annotated[Path, typer.Argument(help="Video to classify.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="Trained checkpoint.")] = Path("stprivacy.pt"),
    preview: Annotated[Path | None, typer.Option(help="Write what the service receives as a video.")] = None,
    keep_ratio: float | None = None, strength: float = 1.0,
    scale: Annotated[int, typer.Option(help="Upscale the preview by this factor (nearest).")] = 4,
    top: int = 3,
    device: Annotated[str, typer.Option(help="Where the network runs: cpu, cuda[:N] (a CUDA build of torch) "
                                             "or auto.")] = "cpu",
) -> None:
    """The action of VIDEO, and optionally the anonymized preview (kept tubelets decoded, rest black)."""
    from veil.device import torch_device, use_device
    from veil.action.data import read_clip
    from veil.media.read import probe
    from veil.media.write import write_frames

    if not video.is_file():
        raise InputError(f"{str(video)!r} does not exist")
    use_device(device)
    model, _ = load_checkpoint(checkpoint)
    model.to(torch_device())
    c = model.config
    clip = torch.from_numpy(read_clip(video, c.frames, c.image_size))[None].to(torch_device())
    with torch.no_grad():
        logits, z, enc = model(to_input(clip), keep_ratio, strength)
        probs = logits.softmax(dim=1)[0].cpu().numpy()
    names = c.actions or tuple(str(i) for i in range(c.num_actions))
    for i in np.argsort(-probs)[:top]:
        typer.echo(f"{names[i]}\t{probs[i]:.3f}")
    if preview is not None:
        frames = (model.decode(z, enc.index)[0] * 255).round().to(torch.uint8).cpu().numpy()
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        info = probe(video)
        duration = info.duration_s or (info.frame_count / float(info.fps) if info.fps else 0.0)
        fps = Fraction(c.frames / duration).limit_denominator(1000) if duration > 0 else Fraction(8)
        write_frames(preview, list(frames), fps)
        console.print(f"preview written to {preview} ({enc.index.shape[1]}/{c.num_tokens} tubelets kept)")
