"""Shared CLI helpers (no heavy imports here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def parse_steps(text: str) -> list[int]:
    # ConfigError (not SystemExit) so main() reports it like every user error: one line, exit 2.
    from metainr.errors import ConfigError

    try:
        steps = sorted({int(s) for s in text.replace(" ", "").split(",") if s})
    except ValueError:
        raise ConfigError(f"--steps expects integers like 2,100, got {text!r}") from None
    if not steps or steps[0] < 0:
        raise ConfigError(f"--steps expects non-negative integers, got {text!r}")
    return steps


def write_json(path: Path | str, data: Any) -> None:
    from metainr.runs.checkpoint import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def info(msg: str) -> None:
    print(msg, file=sys.stderr)


def rescale_kwargs(learner) -> dict[str, Any]:
    """fit() arguments for GradNCP's test-time gradient rescaling (needs a context selector)."""
    from metainr.context.rescale import rescaled_gradients
    from metainr.errors import ConfigError

    if learner.context is None:
        raise ConfigError("--rescale needs a run with a context selector (e.g. --method gradncp)")
    return {"use_context": True, "grad_hook": rescaled_gradients}
