"""Neural fields as pure functions of an explicit parameter dict (see :class:`Field`)."""

from __future__ import annotations

from collections.abc import Mapping

from metainr.fields.base import Field
from metainr.fields.siren import ModulatedSiren, Siren

FIELD_KINDS: dict[str, type[Field]] = {"siren": Siren, "modulated_siren": ModulatedSiren}


def build_field(config: Mapping) -> Field:
    """Rebuild a field from :meth:`Field.config` output."""
    cfg = dict(config)
    kind = cfg.pop("kind")
    if kind not in FIELD_KINDS:
        raise ValueError(f"unknown field kind {kind!r} (known: {', '.join(FIELD_KINDS)})")
    return FIELD_KINDS[kind](**cfg)


__all__ = ["FIELD_KINDS", "Field", "ModulatedSiren", "Siren", "build_field"]
