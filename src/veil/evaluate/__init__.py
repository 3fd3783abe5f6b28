"""Measure a protection: what it hides (privacy), what it keeps (utility), and whether a cloak
resists an attacker who trains on protected faces (attack).

May import anything of the core and `veil.media`. Nothing imports this package but itself, the
command line and the benchmarks: a protection is never judged by code it can see.
"""

from veil.evaluate.run import EvaluateConfig, evaluate

__all__ = ["EvaluateConfig", "evaluate"]
