"""Privacy-preserving streaming codec (cycle-VQ-VAE): ``veil encode`` / ``veil decode``.

`veil.stream.codec` encodes a video into a .veil stream (`veil.stream.format`) of entropy-coded
(`veil.stream.entropy`), audio-keyed (`veil.stream.keying`) code indices of an audio-conditioned
VQ-VAE (`veil.stream.model`), with the video's own audio packets (`veil.stream.audio`).

May import: `veil.media`, `veil.models`, `veil.device`, `veil.errors`. Imported only by the command line and
benchmarks.
"""
