"""Measure a protection: what it hides (privacy), what it keeps (utility), and whether a cloak
resists an attacker who trains on protected faces (attack).

The core never imports this package; it imports the core.
"""

from veil.evaluate.run import EvaluateConfig, evaluate

__all__ = ["EvaluateConfig", "evaluate"]
