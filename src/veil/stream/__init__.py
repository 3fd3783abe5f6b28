"""Privacy-preserving streaming codec (cycle-VQ-VAE): ``veil encode`` / ``veil decode``.

`veil.stream.codec` encodes a video into a .veil stream (`veil.stream.format`) of the code indices
of an audio-conditioned VQ-VAE (`veil.stream.model`), chosen for rate and error, entropy-coded
with a context model (`veil.stream.entropy`) and then hidden under a key stream drawn from the
video's own audio packets (`veil.stream.keying`), which travel with it (`veil.stream.audio`).

May import: `veil.media`, `veil.models`, `veil.device`, `veil.errors`. Imported only by the command line and
benchmarks.
"""
