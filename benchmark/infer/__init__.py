"""Sliding-window prediction shared by the runner, the trainer and the deployment checks."""

from __future__ import annotations

from benchmark.infer.sliding_window import predict_probabilities

__all__ = ["predict_probabilities"]
