"""Methods as named combinations of choices around the one inner loop, and the learner builder.

A preset only fills in defaults of :class:`MethodConfig` / :class:`FieldConfig`; every field can be
overridden, so presets can be combined (e.g. context pruning on a modulation codec).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any

from metainr.errors import ConfigError


@dataclass
class FieldConfig:
    kind: str = "siren"            # siren | modulated_siren
    width: int = 256
    depth: int = 5
    w0: float = 30.0
    w0_first: float | None = None  # defaults to w0
    output_offset: float = 0.0     # +0.5 in GradNCP / Functa / COIN++
    latent_dim: int | None = None  # modulated_siren: latent -> modulations linear map


@dataclass
class MethodConfig:
    preset: str = "maml"
    adapt: str = "all"             # all | signal (modulations/latent) | comma-separated names
    inner_steps: int = 2
    inner_lr: float = 1e-2
    meta_sgd: bool = False
    lr_init_range: tuple[float, float] = (0.005, 0.1)
    lr_clip: tuple[float, float] = (0.0, 1.0)
    first_order: bool = False
    # Settings read by method parts added in sparsity/, context/ (kept here so a run's config is one
    # flat, saved record).
    options: dict[str, Any] = field(default_factory=dict)


# name -> (field overrides, method overrides, description)
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "maml": ({}, {"adapt": "all"}, "MAML: all SIREN weights adapt with SGD (second order)"),
    "maml-fo": ({}, {"adapt": "all", "first_order": True}, "first-order MAML"),
    "meta-sgd": ({}, {"adapt": "all", "meta_sgd": True}, "MAML with learned per-entry learning rates"),
    "functa": ({"kind": "modulated_siren", "latent_dim": 128, "output_offset": 0.5},
               {"adapt": "signal", "meta_sgd": True, "inner_steps": 3},
               "Functa: latent -> shift modulations, Meta-SGD, 3 inner steps"),
    "modulations": ({"kind": "modulated_siren", "output_offset": 0.5},
                    {"adapt": "signal", "meta_sgd": True, "inner_steps": 3},
                    "COIN++-style dense shift modulations"),
    "gradncp": ({"output_offset": 0.5},
                {"adapt": "all", "inner_steps": 16, "options": {
                    "context": {"kind": "gradncp", "gamma": 0.25},
                    "bootstrap": {"steps": 5, "lr": 5e-2, "weight": 100.0}}},
                "GradNCP: top-25% gradient-norm context, K=16, bootstrapped correction (L=5, lambda=100)"),
    "random-context": ({"output_offset": 0.5},
                       {"adapt": "all", "inner_steps": 16, "options": {
                           "context": {"kind": "random", "gamma": 0.25}}},
                       "Random 25% context per inner step, K=16 (GradNCP's random-pruning ablation)"),
    "mscn-grad": ({}, {"adapt": "all", "meta_sgd": True, "options": {
        "gates": {"on": "all", "lam": 1e-3, "target_density": 0.05}}},
        "MSCN: hard-concrete gates on every inner update (sparse per-signal change), Meta-SGD"),
    "mscn-mod": ({"kind": "modulated_siren", "output_offset": 0.5},
                 {"adapt": "signal", "meta_sgd": True, "inner_steps": 3, "options": {
                     "gates": {"on": "all", "lam": 1e-3, "target_density": 0.1}}},
                 "MSCN: gated (sparse) shift modulations on a shared SIREN, Meta-SGD"),
    "metasparse": ({}, {"adapt": "all", "options": {"pruning": {"kind": "magnitude"}}},
                   "Meta-SparseINR: MAML + iterative global magnitude pruning of the init"),
    "random-prune": ({}, {"adapt": "all", "options": {"pruning": {"kind": "random"}}},
                     "Random Pruning baseline: the Meta-SparseINR schedule with random masks"),
}

def apply_preset(name: str, field_cfg: FieldConfig | None = None, method_cfg: MethodConfig | None = None,
                 field_overrides: dict[str, Any] | None = None,
                 method_overrides: dict[str, Any] | None = None) -> tuple[FieldConfig, MethodConfig]:
    if name not in PRESETS:
        raise ConfigError(f"unknown method preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    f_over, m_over, _ = copy.deepcopy(PRESETS[name])  # callers may edit the result in place
    base = method_cfg or MethodConfig()
    merged = {**m_over, **(method_overrides or {})}
    # options merge per part: preset defaults < the given config's settings < explicit overrides
    merged["options"] = _merge_options(m_over.get("options", {}), base.options,
                                       (method_overrides or {}).get("options", {}))
    fcfg = replace(field_cfg or FieldConfig(), **{**f_over, **(field_overrides or {})})
    mcfg = replace(base, preset=name, **merged)
    return fcfg, mcfg


def _merge_options(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = copy.deepcopy(value)
    return out


def build_field_from(cfg: FieldConfig, in_dim: int, out_dim: int):
    from metainr.fields import build_field

    kwargs: dict[str, Any] = {"kind": cfg.kind, "in_dim": in_dim, "out_dim": out_dim, "width": cfg.width,
                              "depth": cfg.depth, "w0": cfg.w0, "w0_first": cfg.w0_first,
                              "output_offset": cfg.output_offset}
    if cfg.kind == "modulated_siren":
        kwargs["latent_dim"] = cfg.latent_dim
    try:
        return build_field(kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid network config: {e}") from e


def build_learner(field_cfg: FieldConfig, method_cfg: MethodConfig, in_dim: int, out_dim: int,
                  seed: int = 0, strategy: str = "auto", chunk: int | None = None):
    """The one place a method becomes a MetaLearner."""
    from metainr.meta import MetaLearner, ParamPartition

    fld = build_field_from(field_cfg, in_dim, out_dim)
    try:
        partition = ParamPartition(fld, adapt=method_cfg.adapt, meta_sgd=method_cfg.meta_sgd,
                                   inner_lr=method_cfg.inner_lr, lr_init_range=method_cfg.lr_init_range,
                                   lr_clip=method_cfg.lr_clip, seed=seed)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    parts = build_parts(method_cfg, partition)
    return MetaLearner(fld, partition, inner_steps=method_cfg.inner_steps, first_order=method_cfg.first_order,
                       shapers=parts["shapers"], context=parts["context"], outer_terms=parts["outer_terms"],
                       strategy=strategy, chunk=chunk)


def build_parts(method_cfg: MethodConfig, partition=None) -> dict[str, Any]:
    """The shapers, context selector and outer-loss terms named in ``method_cfg.options``
    (gates need the ``partition`` to know the shapes of what they gate)."""
    opts = method_cfg.options
    parts: dict[str, Any] = {"shapers": [], "context": None, "outer_terms": []}
    try:
        if "gates" in opts:
            from metainr.sparsity.gates import GatedUpdates

            if partition is None:
                raise ValueError("gates need the parameter partition")
            gate_opts = dict(opts["gates"])
            names = gate_opts.pop("on", "all")
            gated = partition.adapt_names if names == "all" else [n.strip() for n in names.split(",")]
            unknown = [n for n in gated if n not in partition.adapt_names]
            if unknown:
                raise ValueError(f"gates on parameters that do not adapt: {unknown}")
            shapes = {n: tuple(partition.start(n).shape) for n in gated}
            parts["shapers"].append(GatedUpdates(shapes, **gate_opts))
        if "context" in opts:
            from metainr.context.selectors import build_selector

            parts["context"] = build_selector(**opts["context"])
        if "bootstrap" in opts:
            from metainr.context.bootstrap import BootstrapCorrection

            parts["outer_terms"].append(BootstrapCorrection(**opts["bootstrap"]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid method options: {e}") from e
    return parts


def train_callbacks(method_cfg: MethodConfig, seed: int = 0) -> list[Any]:
    """Callbacks a method needs around meta-training (e.g. the pruning schedule)."""
    callbacks: list[Any] = []
    if "pruning" in method_cfg.options:
        from metainr.sparsity.schedule import PruningSchedule

        callbacks.append(PruningSchedule(pruning_config(method_cfg), seed=seed))
    return callbacks


def pruning_config(method_cfg: MethodConfig):
    from metainr.sparsity.schedule import PruningConfig

    try:
        return PruningConfig(**method_cfg.options.get("pruning", {}))
    except TypeError as e:
        raise ConfigError(f"invalid pruning options: {e}") from e


def dataclass_from_dict(cls, data: dict[str, Any]):
    """Build a config dataclass from JSON, refusing unknown keys (typos, other versions)."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = dict(data)
    for f in fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list) and "tuple" in str(f.type):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)
