"""Offline training package of dyco_perception: datasets, synthetic rooms, the ScanNet
benchmark evaluator, the classical baseline, and (later) the trainer."""

__version__ = "0.1.0"
