"""Configs checked against what they build: the model, the objective, the regularizer and the feature network.

:mod:`repro.config` is a leaf (typed sections, params.yaml, the checks that need nothing built); this module holds
what needs the library's models and objectives: :func:`resolve` (scale x method x seed -> a checked, frozen
:class:`~repro.config.RunConfig`), :func:`from_dict` (a recorded ``config.json`` back to one), the model section's
parsing, the objective's and regularizer's checks, the equal-MACs step budget and :func:`run_step_macs`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from .config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    ObjectiveConfig,
    RunConfig,
    TrainConfig,
    _build,
    _fields,
    check_params,
)
from .models import DiTConfig, config_for, train_step_macs, tread_routes
from .models.dit import MODEL_NAMES
from .models.routing import StochasticDepth
from .objectives import OBJECTIVES
from .objectives.regularizers import SRA, Dispersive, check_regularizer, extra_macs, make_regularizer, settings_of
from .validation import as_mapping, check_bool, check_int, check_keys, check_real, invalid, one_line

# ------------------------------------------------------------------------------------------
# Model and objective checks
# ------------------------------------------------------------------------------------------

_MODEL_BOOLS = ("learn_sigma", "qk_norm", "adaln_shift", "fp32_after_route")
_MODEL_NUMBERS = ("mlp_ratio", "class_dropout_prob", "qk_norm_eps")
_NAMED = "tread"  # routes: tread / stochastic_depth: tread


def _tread_stochastic_depth(depth: int) -> StochasticDepth:
    """Stochastic depth over TREAD's blocks, each skipped with TREAD's rate as the probability."""
    return StochasticDepth(*dataclasses.astuple(tread_routes(depth)[0]))


# What ``tread`` stands for under each key, and what else the key takes
_TREAD = {
    "routes": (tread_routes, "a list of [start, end, rate]"),
    "stochastic_depth": (_tread_stochastic_depth, "[start, end, prob]"),
}


def model_config(model: Any, where) -> DiTConfig:
    """A :class:`DiTConfig` from a model section; ``where(key)`` is the dotted name an error on ``key`` reports."""
    section = where("")[:-1]
    model = dict(as_mapping(section, model))
    known = _fields(DiTConfig)
    check_keys(section, model, ["name", *known])
    name = model.pop("name", None)
    depth = model.get("depth")
    if name is not None:
        try:
            base_depth = config_for(name).depth
        except (ValueError, TypeError, AttributeError):
            raise invalid(where("name"), name, f"allowed: {', '.join(MODEL_NAMES)}") from None
    else:
        base_depth = DiTConfig.__dataclass_fields__["depth"].default
    for key in _MODEL_BOOLS:
        if key in model:
            check_bool(where(key), model[key])
    for key in _MODEL_NUMBERS:
        if key in model:
            check_real(where(key), model[key])
    if depth is None:
        depth = base_depth
    else:
        check_int(where("depth"), depth)
    for key, (expand, otherwise) in _TREAD.items():
        value = model.get(key)
        if isinstance(value, str):
            if value != _NAMED:
                raise invalid(where(key), value, f"allowed: tread (TREAD's blocks 2 to depth-4) or {otherwise}")
            if depth < 5:
                raise invalid(where("depth"), depth, f"{key}: tread (blocks 2 to depth-4) needs depth >= 5")
            model[key] = expand(depth)
    routes = model.get("routes")
    if routes is not None and not isinstance(routes, (list, tuple)):
        raise invalid(where("routes"), routes, "allowed: tread or a list of [start, end, rate]")
    try:
        return config_for(name, **model) if name else DiTConfig(**model)
    except (ValueError, TypeError) as e:
        raise _attribute(e, where, known, section) from None


def _attribute(e: BaseException, where, keys, fallback: str) -> ConfigError:
    """``e``'s message (``"key...: what"``) with its leading key replaced by the dotted name ``where(key)``."""
    msg = one_line(e)
    m = re.match(r"[a-z_][a-z0-9_]*", msg)
    if m and m.group() in keys:
        return ConfigError(where(m.group()) + msg[m.end() :])
    return ConfigError(f"{fallback}: {msg}")


def check_objective(objective: Any, prefix: str, learn_sigma: bool, sigma_field: str) -> None:
    """The objective settings build an objective, and the model's ``learn_sigma`` is what it needs."""
    if not isinstance(objective, (dict, ObjectiveConfig)) or "name" not in objective:
        raise invalid(prefix, objective, "must be a mapping with a name: ddpm, interpolant or edm")
    name = objective["name"]
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise invalid(f"{prefix}.name", name, f"allowed: {', '.join(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    settings = {k: v for k, v in objective.items() if k != "name"}
    check_keys(prefix, settings, ["name", *allowed], f"setting of objective {name!r}")
    try:
        built = cls(**settings)
    except (ValueError, TypeError) as e:
        raise _attribute(e, lambda key: f"{prefix}.{key}", allowed, prefix) from None
    wants_sigma = getattr(built, "learn_sigma", False)
    if wants_sigma != learn_sigma:
        raise invalid(sigma_field, learn_sigma, f"objective {name!r} needs learn_sigma={wants_sigma}")


def built_regularizer(cfg: RunConfig):
    """The regularizer of ``cfg.regularizer``, its blocks resolved for the model (None without one); checked
    against the model, the objective and the micro-batch."""
    if cfg.regularizer is None:
        return None
    where = lambda key: f"regularizer.{key}"  # noqa: E731
    try:
        reg = make_regularizer(copy.deepcopy(cfg.regularizer), cfg.model.depth)
        micro = cfg.train.batch_size // cfg.train.grad_accum
        check_regularizer(reg, cfg.model, cfg.objective.get("name"), micro)
    except (ValueError, TypeError) as e:
        raise ConfigError(where(one_line(e))) from None
    return reg


def validate(cfg: RunConfig) -> None:
    """Every check of ``cfg``: its sections (:meth:`RunConfig.validate`'s, in the same order), the objective
    against the model and the regularizer against the model, the objective and the micro-batch."""
    cfg.check_sections()
    predicts_sigma = cfg.model.learn_sigma and not cfg.model.discard_sigma  # SiT's layout discards it
    check_objective(cfg.objective, "objective", predicts_sigma, "model.learn_sigma")
    cfg.check_combination()
    if cfg.regularizer is not None:
        built_regularizer(cfg)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """A recorded configuration (``RunConfig.to_dict()``, as in a run's ``config.json``), built and checked."""
    d = copy.deepcopy(d)
    cfg = RunConfig(
        run_id=d["run_id"],
        scale=d["scale"],
        method=d["method"],
        seed=d["seed"],
        model=model_config(d["model"], lambda key: f"model.{key}"),
        objective=d["objective"],
        data=_build(DataConfig, d.get("data", {}), "data"),
        train=_build(TrainConfig, d.get("train", {}), "train"),
        eval=_build(EvalConfig, d.get("eval", {}), "eval"),
        regularizer=d.get("regularizer"),
    )
    validate(cfg)
    return cfg


def check_data_files(cfg: RunConfig) -> None:
    """What only the files can tell, checked before training starts: latent shards that match the model (channels,
    size, classes, counts), and the feature network the sample metrics need."""
    d, m, e = cfg.data, cfg.model, cfg.eval
    if d.name == "latents":
        path = Path(d.path) / "manifest.json"
        if not path.is_file():
            raise invalid("data.path", d.path, "must be a folder of latent shards with a manifest.json")
        try:
            manifest = json.loads(path.read_text())
            channels, height, width = manifest["latent_shape"][-3:]
            classes, count = len(manifest["classes"]), int(manifest["count"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(f"{path}: not a latent-shards manifest ({type(exc).__name__}: {exc})") from None
        for key, value, want in (("in_channels", m.in_channels, channels), ("input_size", m.input_size, height)):
            if value != want:
                raise invalid(f"model.{key}", value, f"the latents in {d.path} need {key} = {want}")
        if height != width:
            raise ConfigError(f"{path}: latents of {height}x{width}; the model needs square inputs")
        if m.num_classes < classes:
            raise invalid("model.num_classes", m.num_classes, f"must be >= {classes}, the classes in {d.path}")
        if d.subset is not None and d.subset > count:
            raise invalid("data.subset", d.subset, f"must be <= {count}, the latents in {d.path}")
        if e.val_size > (d.subset or count):
            raise invalid("eval.val_size", e.val_size, f"must be <= {d.subset or count}, the latents used")
    if d.name == "fashion-mnist" and cfg.eval.metrics:
        from .metrics import featurenet

        featurenet.register(None)  # raises naming the weights file when it is missing or does not match


# ------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------


def resolve(params: dict[str, Any], scale: str, method: str, seed: int) -> RunConfig:
    """The complete configuration of one run: the scale's settings merged with the method's."""
    check_params(params)
    scales, methods = params["scales"], params["methods"]
    if scale not in scales:
        raise invalid("--scale", scale, f"allowed: {', '.join(scales)}")
    if method not in methods:
        raise invalid("--method", method, f"allowed: {', '.join(methods)}")
    check_int("--seed", seed, low=0)
    s, m = scales[scale], methods[method]
    s_model, m_model = as_mapping("model", s.get("model")), as_mapping("model", m.get("model"))
    s_eval, m_eval = as_mapping("eval", s.get("eval")), as_mapping("eval", m.get("eval"))

    def where(section: str, key: str) -> str:
        if section in ("model", "eval") and key in (m_model if section == "model" else m_eval):
            return f"methods.{method}.{section}.{key}"
        if section in ("objective", "regularizer"):
            return f"methods.{method}.{section}.{key}"
        return f"scales.{scale}.{section}.{key}"

    model = model_config({**s_model, **m_model}, lambda key: where("model", key))
    data = _build(DataConfig, s.get("data"), f"scales.{scale}.data")
    train = _build(TrainConfig, s.get("train"), f"scales.{scale}.train")
    evaluation = _build(EvalConfig, {**s_eval, **m_eval}, f"scales.{scale}.eval")
    objective = ObjectiveConfig.from_dict(m["objective"], f"methods.{method}.objective")
    if evaluation.clip_denoised is True:  # a property of the data (pixels): every method's sampler clips
        objective = objective.with_settings(clip_denoised=True)
    cfg = RunConfig(
        run_id=f"{scale}-{method}-s{seed}",
        scale=scale,
        method=method,
        seed=seed,
        model=model,
        objective=objective,
        data=data,
        train=train,
        eval=evaluation,
        regularizer=copy.deepcopy(m["regularizer"]) if "regularizer" in m else None,
    )
    _validate_as(cfg, where)
    if cfg.regularizer is not None:  # recorded with its blocks resolved for the scale's depth
        cfg = dataclasses.replace(cfg, regularizer=settings_of(built_regularizer(cfg)))
    if cfg.train.equal_cost == "macs":
        cfg = equalize_macs(cfg)
        _validate_as(cfg, where)
    return cfg


def _validate_as(cfg: RunConfig, where) -> None:
    """``validate(cfg)`` with its errors naming params.yaml's dotted fields."""
    try:
        validate(cfg)
    except ConfigError as e:
        msg = str(e)
        section, _, rest = msg.partition(".")
        if section in ("model", "data", "train", "eval", "objective", "regularizer") and rest:
            raise _attribute(ConfigError(rest), lambda key: where(section, key), _all_keys(section), section) from None
        raise


def _all_keys(section: str) -> list[str]:
    classes = {"model": [DiTConfig], "data": [DataConfig], "train": [TrainConfig], "eval": [EvalConfig]}
    classes["objective"] = list(OBJECTIVES.values())
    classes["regularizer"] = [Dispersive, SRA]
    return ["name"] + [f.name for c in classes[section] for f in dataclasses.fields(c)]


def run_step_macs(cfg: RunConfig) -> int:
    """Training MACs of one step of the run: the model's forward and backward (routes active, stochastic depth at
    its expectation) and its regularizer's extra work (SRA's EMA teacher and projector, the dispersive loss's
    pairwise products)."""
    macs = train_step_macs(cfg.model, cfg.train.batch_size)
    if cfg.regularizer is None:
        return macs
    return macs + extra_macs(built_regularizer(cfg), cfg.model, cfg.train.batch_size)


def equalize_macs(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its step count scaled by (dense step MACs) / (this method's step MACs); evaluations and
    checkpoints follow at the same MAC points as the dense run's (``TrainConfig.step_scale``). The dense step is
    the model's without routes, stochastic depth or a regularizer, so a regularizer's extra MACs buy it fewer
    steps."""
    if not cfg.model.routes and cfg.model.stochastic_depth is None and cfg.regularizer is None:
        return cfg
    dense = cfg.model.replace(routes=(), stochastic_depth=None)
    ratio = train_step_macs(dense, cfg.train.batch_size) / run_step_macs(cfg)
    train = dataclasses.replace(cfg.train, step_scale=ratio, steps=max(1, round(cfg.train.steps * ratio)))
    return dataclasses.replace(cfg, train=train)
