"""Cloak: Fawkes-style adversarial cloaks against face recognition, reused from frame to frame
(Guo et al., "Efficient Video Privacy Protection Against Malicious Face Recognition Models").

- `protector`: ``--method cloak``, per tracked face: target, warm start, optimisation, budget;
- `optimise`: one face's cloak by gradient steps through an ensemble of recognizers (Eq. 5, Algorithm 1);
- `eot`: the views of a face an attacker's pipeline may take, averaged over at every step;
- `ops`: the face region, the soft mask, DSSIM and the key-point affine warp (Eq. 6);
- `targets`: the bank of other people's descriptors and the choice of a target per person.

May import: `veil.protect` (its registry and masks), `veil.models` (the recognizer registry, the
model store), `veil.detect`, `veil.align`, `veil.faces`, `veil.device` (where its networks run),
`veil.errors`; `targets` also reads the
bank's photos with `veil.media`, when it builds the bank. Never pipeline or evaluation code. Imported by the protection registry, lazily, when ``--method cloak`` is used.
"""
