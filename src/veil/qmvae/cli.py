"""``veil train qmvae``: train QM-VAE on a folder of face photos or videos, on CelebA, or
(``--default``) the shipped model on the store's real media."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from veil.console import command, fail

__all__ = ["train_qmvae_command"]


@command
def train_qmvae_command(
    faces: Annotated[Optional[Path], typer.Option("--faces", help="Folder (or file) of face photos/videos, or a "
                                                  "CelebA root (img_align_celeba/ + list_eval_partition.txt).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Checkpoint to write (config, inputs "
                                                   "list, weights, history); loss curves go beside it as "
                                                   "<output>.curves.csv and .png. With --default: the shipped "
                                                   "model's file.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Train the shipped model (src/veil/qmvae/weights/"
                                          "qmvae.pt) on the store's real photos and videos, with the "
                                          "defaults: about 6 min on 2 CPU cores, the same weights on the "
                                          "same machine.")] = False,
    alpha: Annotated[float, typer.Option(help="Eq. 7: weight of the service loss against the MSE (0..1).")] = 0.4,
    beta: Annotated[float, typer.Option(help="Eq. 7: commitment weight.")] = 0.25,
    epochs: Annotated[int, typer.Option(help="Epochs (a resumed run continues up to this many).")] = 34,
    warmup: Annotated[int, typer.Option(help="Epochs of reconstruction alone before the service term joins "
                                        "(after them only the encoder and codebook train, on Eq. 7).")] = 14,
    batch_size: Annotated[int, typer.Option(help="Faces per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate (the service epochs use 0.25 x it, decaying).")] = 2e-3,
    service_lr_scale: Annotated[float, typer.Option(help="Learning rate of the service epochs, as a fraction "
                                                    "of --lr.")] = 0.25,
    freeze_decoder: Annotated[bool, typer.Option(help="Train only the encoder and codebook once the service "
                                                 "term joins.")] = True,
    inputs: Annotated[str, typer.Option(help="De-identifications fed to the model, comma-separated "
                                        "(blindfold, mosaic, noise, cartoon, blur).")] = "blindfold,mosaic,noise,cartoon",
    size: Annotated[int, typer.Option(help="Crop size in pixels (a multiple of 8).")] = 96,
    codebook_size: Annotated[int, typer.Option(help="Vectors in the codebook.")] = 32,
    codebook_dim: Annotated[int, typer.Option(help="Dimension of a codebook vector.")] = 32,
    stride: Annotated[int, typer.Option(help="Use every n-th video frame.")] = 1,
    cap: Annotated[int, typer.Option(help="At most this many training faces per photo/video, evenly spaced (0: all): "
                                     "keeps one long video's person from becoming the face the model draws.")] = 24,
    copies: Annotated[int, typer.Option(help="Jittered (shifted, mirrored, recoloured) copies of each training face.")] = 2,
    max_frames: Annotated[Optional[int], typer.Option(help="Read at most this many frames of each video.")] = None,
    max_images: Annotated[Optional[int], typer.Option(help="CelebA: use at most this many images.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from --output if it exists.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and noise.")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
    service: Annotated[str, typer.Option(help="Expression classifiers of the service term, comma-separated "
                                         "(faceapi, human, fer): their KL divergences averaged.")] = "faceapi,human,fer",
    ssim_weight: Annotated[float, typer.Option(help="Weight of 1 - SSIM of the drawn face against the original, "
                                               "beside the MSE.")] = 0.2,
    geometry_weight: Annotated[float, typer.Option(help="Weight of the change of the expression's geometry (face-api's "
                                                   "68 landmarks: mouth, brows, eyes) in the service epochs.")] = 1.0,
    lfw: Annotated[bool, typer.Option("--lfw/--no-lfw", help="Also train on the 100 faces of Labeled Faces "
                                      "in the Wild that scikit-image ships (25 px, grey, enlarged 4x) as extra "
                                      "people; never held out. Not in --default's recipe: the faces it drew "
                                      "became re-identifiable.")] = False,
) -> None:
    """Train QM-VAE (Eq. 7, Adam) on an 80/20 split; prints progress and saves after every epoch."""
    import torch

    from veil.qmvae.checkpoint import TrainConfig, default_checkpoint, save_checkpoint
    from veil.qmvae.data import default_sources, find_sources, lfw_subset
    from veil.qmvae.model import QMVAEConfig
    from veil.qmvae.service import parse_members, service_for
    from veil.qmvae.train import run

    if default == (faces is not None):
        fail("give --faces DIR (with --output FILE), or --default")
    if faces is not None and output is None:
        fail("--faces needs --output FILE: the checkpoint to write")
    if epochs < 1 or batch_size < 1 or lr <= 0 or not 0 <= alpha <= 1 or cap < 0 or copies < 0:
        fail("need epochs >= 1, batch size >= 1, lr > 0, 0 <= alpha <= 1, cap >= 0 and copies >= 0")
    if ssim_weight < 0 or geometry_weight < 0:
        fail("need --ssim-weight >= 0 and --geometry-weight >= 0")
    try:
        config = QMVAEConfig(inputs=tuple(s.strip() for s in inputs.split(",") if s.strip()), size=size,
                             codebook_size=codebook_size, codebook_dim=codebook_dim)
        members = parse_members(service)
    except ValueError as exc:
        fail(str(exc))
    tc = TrainConfig(alpha=alpha, beta=beta, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                     warmup_epochs=warmup, service_lr_scale=service_lr_scale, freeze_decoder=freeze_decoder,
                     ssim_weight=ssim_weight, geometry_weight=geometry_weight)
    if threads:
        torch.set_num_threads(threads)
    out = output or default_checkpoint()
    if lfw and faces is not None and (faces / "list_eval_partition.txt").is_file():
        fail("--lfw adds people to photos and videos, not to a CelebA root (which has its own split)")
    sources = default_sources() if default else faces
    extra = lfw_subset() if lfw else []
    if extra:
        sources = [*(sources if isinstance(sources, list) else find_sources(sources)), *extra]
    ckpt = run(sources, out, config, tc, resume=resume, stride=stride, max_frames=max_frames, max_images=max_images,
               service=service_for(config.crop, members), cap=cap or None, copies=copies, colour=0.15,
               train_only=extra, log=lambda line: typer.echo(line, err=True))
    if default:
        save_checkpoint(ckpt, out, keep_optimizer=False)  # the shipped file: weights, config, history
    last = ckpt.history[-1] if ckpt.history else {}
    typer.echo(f"{out}: epoch {ckpt.epoch}, test mse {last.get('test_mse', float('nan')):.4f}, "
               f"expression loss rate {last.get('test_service_loss_rate', float('nan')):.3f}")
