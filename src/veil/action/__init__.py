"""Privacy-preserving action recognition: STPrivacy (Li et al., ICCV 2023).

A video transformer over tubelet tokens drops action-irrelevant tubelets (`sparsify`) and changes the
kept ones adversarially so that private attributes cannot be read from them (`anonymize`); `attack`
measures what a fresh attacker still reads. Commands: `veil action train | evaluate | predict |
make-synthetic` (`cli`).

May import: `veil.media` (in its data loaders and commands only), `veil.models` (the checkpoint
format), `veil.errors`. Imported only by
the command line and benchmarks.
"""

from veil.action.config import PRESETS, ActionConfig, preset
from veil.action.model import STPrivacy

__all__ = ["ActionConfig", "PRESETS", "preset", "STPrivacy"]
