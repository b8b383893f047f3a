"""A run's full configuration, saved as JSON in the run directory and checked on resume."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from metainr.errors import ConfigError
from metainr.methods import FieldConfig, MethodConfig, dataclass_from_dict
from metainr.signals.datasets import DataSpec


@dataclass
class TrainConfig:
    steps: int = 1000               # outer steps
    meta_batch: int = 3
    outer_lr: float = 1e-4
    grad_clip: float | None = 1.0   # outer gradient norm clip (None: off)
    strategy: str = "auto"          # loop | batched | vmap | auto (fastest per device)
    chunk: int | None = None        # coordinates per chunk in graph-free full-context passes
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    log_every: int = 10
    eval_every: int = 250           # 0: only at the end
    eval_signals: int = 32          # test signals used by the periodic evaluation
    ckpt_every: int = 250
    keep_checkpoints: int = 3       # newest kept (plus any marked to keep, e.g. pruning rounds)
    tensorboard: bool = False
    max_minutes: float | None = None  # stop (with a checkpoint) after this much training wall-clock


@dataclass
class RunConfig:
    data: DataSpec = dc_field(default_factory=DataSpec)
    field: FieldConfig = dc_field(default_factory=FieldConfig)
    method: MethodConfig = dc_field(default_factory=MethodConfig)
    train: TrainConfig = dc_field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            return cls(data=dataclass_from_dict(DataSpec, data.get("data", {})),
                       field=dataclass_from_dict(FieldConfig, data.get("field", {})),
                       method=dataclass_from_dict(MethodConfig, data.get("method", {})),
                       train=dataclass_from_dict(TrainConfig, data.get("train", {})))
        except TypeError as e:
            raise ConfigError(f"invalid run config: {e}") from e

    def save(self, path: Path) -> None:
        from metainr.runs.checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"no run config at {path} (is this a metainr run directory?)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"run config {path} is not valid JSON: {e}") from None

    def model_signature(self) -> dict[str, Any]:
        """What must match for a checkpoint to load into this config's learner."""
        d = self.to_dict()
        return {"field": d["field"], "method": d["method"], "channels": d["data"]["channels"],
                "modality": d["data"]["modality"]}
