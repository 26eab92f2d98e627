"""Offline training package of dyco_perception: scene readers and splits, augmentation, losses,
the trainer, the classical baseline and the CLIs. The evaluator, the npz scene reader and the
room generator live in the core (dyco_perception), which this package builds on."""

__version__ = "0.1.0"
