"""The error a task raises when its run point cannot run (the message says what to change)."""

from __future__ import annotations

__all__ = ["PointError"]


class PointError(ValueError):
    """A run point whose settings contradict its model, data or files."""
