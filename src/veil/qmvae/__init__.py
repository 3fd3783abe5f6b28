"""QM-VAE: a VQ-VAE that fuses k de-identified copies of a face (eye band, mosaic, Laplace noise,
cartoon) into one face that hides identity and keeps what a service needs (its expression).

- `model`: the network, its loss (Eq. 7), the service and the code search;
- `deidentify`: the model's inputs, the crop de-identified k ways (Eq. 1-3);
- `paste`: the mask the generated face is pasted under, and its rendering in other crops;
- `search`: the service search at protection time and the identity guard;
- `protector`: ``--method qmvae``;
- `checkpoint`: checkpoints and the shipped model (``weights/qmvae.pt``);
- `data`: aligned faces from photos, videos or CelebA, split 80/20 (reads media);
- `train`: training (Eq. 7, Adam), resumable; `cli`: ``veil train qmvae``.

May import: `veil.protect`, `veil.models`, `veil.align`, `veil.faces`, `veil.errors`; `data` and
`train` also `veil.detect` and `veil.media`. The model, its search and the protector import no
media code. Imported by the protection registry, lazily, when ``--method qmvae`` is used.
"""
