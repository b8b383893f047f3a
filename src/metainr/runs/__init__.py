"""Training runs: configs, checkpoints, the trainer, multi-process helpers."""
