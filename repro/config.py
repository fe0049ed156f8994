"""Typed run configuration, resolved from ``params.yaml``: scale x method x seed -> one :class:`RunConfig`.

``params.yaml`` holds ``scales`` (model size, data, training and evaluation settings, the methods
and seeds each scale runs) and ``methods`` (objective and model flags of each method, the same at
every scale). A method's ``routes: tread`` means TREAD's official route for the scale's depth (block
2 to block depth-4 at rate 0.5); ``stochastic_depth: tread`` skips the same blocks per sample with
probability 0.5, the same expected saving.

Every section and key is checked before anything runs: an unknown or duplicated key, a value of the
wrong type or out of range, and settings the data cannot serve (image size, channels, classes, more
images than the data set holds, a reference set that does not exist) fail with a :class:`ConfigError`
whose one line names the dotted field, the value and what is allowed.

This module is a leaf: it imports nothing of the library but :mod:`repro.io` and :mod:`repro.validation`. The
checks that need a model, an objective, a regularizer or the feature network, and :func:`resolve` itself, live in
:mod:`repro.build`, where those are built. A resolved :class:`RunConfig` and its sections are frozen: a change is a
new config (``dataclasses.replace`` or :meth:`RunConfig.with_train` / :meth:`RunConfig.with_eval`, which re-check
it).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import read_yaml
from .validation import (
    ValidationError,
    as_mapping,
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_name,
    check_real,
    invalid,
)

PRECISIONS = ("fp32", "bf16")
DATASETS = ("fashion-mnist", "latents", "synthetic")
REFERENCES = ("train", "test")
TOP_SECTIONS = ("scales", "methods")
SCALE_SECTIONS = ("methods", "seeds", "extra_seeds", "model", "data", "train", "eval")
METHOD_SECTIONS = ("objective", "model", "eval", "regularizer")
# What the Fashion-MNIST data can serve (images padded to 32x32, one channel, 10 classes).
FASHION_MNIST = {"input_size": 32, "in_channels": 1, "num_classes": 10, "train": 60_000, "test": 10_000}
SYNTHETIC_DEFAULT_SIZE = 1024
# The keys of a model section: "name" and the fields of repro.models.DiTConfig (a test keeps the two the same).
MODEL_FIELDS = (
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
    "learn_sigma",
    "discard_sigma",
    "norm_placement",
    "conditioning",
    "norm",
    "mlp",
    "pos_embed",
    "qk_norm",
    "qk_norm_eps",
    "adaln_shift",
    "routes",
    "stochastic_depth",
    "fp32_after_route",
    "init",
)


# A configuration that cannot run: the one-line message names the dotted field, the value and what is allowed.
ConfigError = ValidationError


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64  # global batch, over all processes and accumulation steps
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    ema_decay: float = 0.9999
    grad_accum: int = 1
    eval_every: int = 250
    ckpt_every: int = 250
    log_every: int = 25
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA)
    tf32: bool = False
    threads: int | None = None  # CPU threads; None keeps torch's default
    keep_checkpoints: bool = False  # keep every checkpoint, not only the last
    # Equal budgets. "macs": a method whose steps are cheaper (routes, stochastic depth) gets
    # proportionally more steps (and evaluations at the same MAC points) than the dense model, so
    # every method of a scale spends the same training MACs. max_seconds: stop at this much training
    # wall-clock (an equal time budget on one device), with a final evaluation.
    equal_cost: str | None = None
    max_seconds: float | None = None
    # Set by equal_cost (not meant for params.yaml): the step count was scaled by this factor, and
    # evaluations and checkpoints fall on round(k * every * step_scale), the dense run's MAC points.
    step_scale: float = 1.0
    # Train to target (MLPerf's rule): a JSON file of targets (written by `repro targets` from the baseline's
    # finished runs: "fid", and "val_loss" with the "objective" it was measured on); the run stops at the first
    # sample-quality evaluation that makes target_patience of them in a row reach every target that applies (the
    # validation loss only on the same objective), or at train.steps, whichever comes first.
    to_target: str | None = None
    target_patience: int = 2

    def at_dense(self, step: int, dense_steps) -> bool:
        """Whether ``step`` is one of ``dense_steps`` (dense-model steps) on the MAC-scaled schedule, or the last."""
        return step == self.steps or any(round(a * self.step_scale) == step for a in dense_steps)

    def on_schedule(self, step: int, every: int) -> bool:
        """Whether ``step`` is a multiple of ``every`` dense steps on the MAC-scaled schedule, or the last step."""
        if step == self.steps:
            return True
        interval = every * self.step_scale
        k = round(step / interval)
        return k >= 1 and round(k * interval) == step

    def is_eval_step(self, step: int) -> bool:
        """Whether the run evaluates after ``step`` steps (always after the last one)."""
        return self.on_schedule(step, self.eval_every)

    def is_ckpt_step(self, step: int) -> bool:
        return self.on_schedule(step, self.ckpt_every)

    def validate(self, prefix: str = "train") -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "ckpt_every", "log_every"):
            check_int(f"{prefix}.{name}", getattr(self, name))
        check_real(f"{prefix}.lr", self.lr, gt=0)
        check_real(f"{prefix}.weight_decay", self.weight_decay, ge=0)
        # 1.0 would keep the EMA at its initial weights for ever
        check_real(f"{prefix}.ema_decay", self.ema_decay, ge=0, lt=1)
        if self.grad_clip is not None:
            check_real(f"{prefix}.grad_clip", self.grad_clip, gt=0)
        betas = self.betas
        if (
            not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise invalid(f"{prefix}.betas", betas, "must be two numbers in [0, 1)")
        for name in ("tf32", "keep_checkpoints"):
            check_bool(f"{prefix}.{name}", getattr(self, name))
        if self.threads is not None:
            check_int(f"{prefix}.threads", self.threads)
        check_choice(f"{prefix}.precision", self.precision, PRECISIONS)
        if self.equal_cost not in (None, "macs"):
            raise invalid(f"{prefix}.equal_cost", self.equal_cost, "allowed: macs, or null for equal steps")
        if self.max_seconds is not None:
            check_real(f"{prefix}.max_seconds", self.max_seconds, gt=0)
        check_real(f"{prefix}.step_scale", self.step_scale, gt=0)
        if self.to_target is not None and (not isinstance(self.to_target, str) or not self.to_target.endswith(".json")):
            raise invalid(f"{prefix}.to_target", self.to_target, "must be the path of a targets JSON file")
        check_int(f"{prefix}.target_patience", self.target_patience)
        if self.batch_size % self.grad_accum:
            raise invalid(f"{prefix}.batch_size", self.batch_size, f"must be divisible by grad_accum={self.grad_accum}")


@dataclass(frozen=True)
class EvalConfig:
    num_samples: int = 1000
    sample_steps: int = 25
    guidance_scale: float = 1.0
    metrics: tuple[str, ...] = ("fid", "kid", "prc")
    reference: str = "test"
    reference_size: int | None = None
    val_size: int = 256  # test images in the validation-loss batch
    val_points: int = 8  # fixed noise levels of the validation loss
    batch_size: int = 500  # sampling batch
    seed: int = 1234  # noise of the evaluation samples, the same at every evaluation
    # clamp the sampler's clean-image estimate to [-1, 1] (pixel data only; merged into the objective's settings)
    clip_denoised: bool = False
    # >= 2: also FID of that many disjoint blocks of the samples, giving the FID's sd at num_samples (fid_sd)
    fid_blocks: int = 1
    # Sample quality (generate + metrics) only every this many steps (a multiple of train.eval_every, on the
    # same MAC-scaled schedule) and at the last step; the validation loss stays at every evaluation. None: at
    # every evaluation.
    sample_every: int | None = None
    # ... or only at these dense-model steps (each a multiple of train.eval_every; a log-spaced grid for a long
    # horizon) and at the last step. At most one of sample_every and sample_at.
    sample_at: tuple[int, ...] | None = None
    # A second FID from another number of sampling steps, stored as "fid@<steps>" in the curve point: the
    # sampler's share of a late FID. {"sample_steps": {objective name: steps}, "at": [dense steps], "seeds":
    # [seeds]}: at those sample-quality evaluations and at the last one, for those seeds.
    extra_fid: dict | None = None

    def validate(self, prefix: str = "eval") -> None:
        for name in ("num_samples", "sample_steps", "val_size", "val_points", "batch_size", "fid_blocks"):
            check_int(f"{prefix}.{name}", getattr(self, name))
        check_bool(f"{prefix}.clip_denoised", self.clip_denoised)
        if self.sample_every is not None:
            check_int(f"{prefix}.sample_every", self.sample_every)
        if self.sample_at is not None:
            at = self.sample_at
            if (
                not isinstance(at, (list, tuple))
                or not at
                or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in at)
                or list(at) != sorted(set(at))
            ):
                raise invalid(f"{prefix}.sample_at", at, "a non-empty, increasing list of positive step counts")
            if self.sample_every is not None:
                raise invalid(f"{prefix}.sample_at", at, "at most one of sample_every and sample_at")
        if self.extra_fid is not None:
            self._check_extra_fid(prefix)
        if self.fid_blocks > 1 and self.num_samples // self.fid_blocks < 2:
            raise invalid(
                f"{prefix}.fid_blocks", self.fid_blocks, f"needs >= 2 samples a block (num_samples={self.num_samples})"
            )
        check_real(f"{prefix}.guidance_scale", self.guidance_scale, ge=0)
        metrics = self.metrics
        if (
            not isinstance(metrics, (list, tuple))
            or any(m not in ("fid", "kid", "prc") for m in metrics)
            or len(set(metrics)) != len(metrics)
        ):
            raise invalid(f"{prefix}.metrics", metrics, "a list of distinct entries from fid, kid, prc (or [])")
        check_choice(f"{prefix}.reference", self.reference, REFERENCES)
        if self.reference_size is not None:
            check_int(f"{prefix}.reference_size", self.reference_size)
        check_int(f"{prefix}.seed", self.seed, low=0)
        if metrics and self.num_samples < 4:  # a covariance and 3 nearest neighbours need a few samples
            raise invalid(f"{prefix}.num_samples", self.num_samples, "must be >= 4 when metrics are computed")

    def _check_extra_fid(self, prefix: str) -> None:
        e, where = self.extra_fid, f"{prefix}.extra_fid"
        if not isinstance(e, dict) or set(e) != {"sample_steps", "at", "seeds"}:
            raise invalid(where, e, "a mapping with exactly sample_steps, at and seeds")
        steps = e["sample_steps"]
        if not isinstance(steps, dict) or not steps:
            raise invalid(f"{where}.sample_steps", steps, "a mapping of objective name to a number of sampling steps")
        for name, n in steps.items():
            check_int(f"{where}.sample_steps.{name}", n)
        for key in ("at", "seeds"):
            values = e[key]
            if not isinstance(values, (list, tuple)) or not all(type(v) is int for v in values):
                raise invalid(f"{where}.{key}", values, "a list of integers")


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion-mnist"
    subset: int | None = None  # use only the first N training images (after the seeded shuffle)
    path: str | None = None  # latents: folder of shards written by repro.data.latents

    def validate(self, prefix: str = "data") -> None:
        check_choice(f"{prefix}.name", self.name, DATASETS)
        if self.subset is not None:
            check_int(f"{prefix}.subset", self.subset)
        if self.path is not None and not isinstance(self.path, str):
            raise invalid(f"{prefix}.path", self.path, "must be a folder path (a string)")
        if self.name == "latents" and not self.path:
            raise invalid(f"{prefix}.path", self.path, "latents need the folder of encoded shards")
        if self.name != "latents" and self.path is not None:
            raise invalid(f"{prefix}.path", self.path, f"only data.name latents reads a path, not {self.name!r}")


@dataclass(frozen=True)
class ObjectiveConfig(Mapping):
    """A method's objective: its ``name`` (ddpm, interpolant or edm) and the settings its class is built with, in
    params.yaml's order. It reads as the mapping ``{"name": ..., **settings}`` (what ``to_dict`` records), so
    ``make_objective(**cfg.objective)`` builds it; :func:`repro.build.check_objective` checks that it does."""

    name: str
    settings: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "objective") -> ObjectiveConfig:
        if not isinstance(d, Mapping) or "name" not in d:
            raise invalid(prefix, d, "must be a mapping with a name: ddpm, interpolant or edm")
        if list(d)[0] != "name":  # to_dict writes the name first: a config.json must read back as it was
            d = {"name": d["name"], **d}
        return cls(d["name"], tuple((k, copy.deepcopy(v)) for k, v in d.items() if k != "name"))

    def with_settings(self, **changes: Any) -> ObjectiveConfig:
        """This objective with ``changes`` set (a new key goes last, as it would in a dict)."""
        settings = dict(self.settings)
        settings.update(changes)
        return dataclasses.replace(self, settings=tuple(settings.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: copy.deepcopy(v) for k, v in self.settings}}

    def __getitem__(self, key: str) -> Any:
        if key == "name":
            return self.name
        for k, v in self.settings:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield "name"
        yield from (k for k, _ in self.settings)

    def __len__(self) -> int:
        return 1 + len(self.settings)


@dataclass(frozen=True)
class RunConfig:
    """One run's resolved configuration (built by :func:`repro.build.resolve`), frozen: a change is a new config."""

    run_id: str
    scale: str
    method: str
    seed: int
    model: Any  # a repro.models.DiTConfig (built and checked by repro.build)
    objective: ObjectiveConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # A representation regularizer added to the objective's training loss ({name: dispersive | sra, settings}; see
    # repro/objectives/regularizers.py); None, the default, trains the objective alone, as every run before it did.
    regularizer: dict[str, Any] | None = None

    def __post_init__(self):
        objective = self.objective  # a mapping with a name (as params.yaml and config.json hold it) reads as one
        if isinstance(objective, Mapping) and not isinstance(objective, ObjectiveConfig) and "name" in objective:
            object.__setattr__(self, "objective", ObjectiveConfig.from_dict(self.objective))

    def validate(self) -> None:
        """The checks that need neither a model, an objective class nor a regularizer (those are
        :func:`repro.build.validate`'s, which runs these in the same order around its own)."""
        self.check_sections()
        self.check_combination()

    def check_sections(self) -> None:
        """Each section on its own: names, seed, data, train and eval."""
        for name in ("scale", "method"):
            check_name(name, getattr(self, name))
        check_int("seed", self.seed, low=0)
        self.data.validate()
        self.train.validate()
        self.eval.validate()

    def check_combination(self) -> None:
        """The sections together: what the data can serve, evaluation schedules on the training's."""
        check_against_data(self, lambda section, key: f"{section}.{key}")
        every = self.eval.sample_every
        if every is not None and every % self.train.eval_every:
            raise invalid("eval.sample_every", every, f"must be a multiple of train.eval_every={self.train.eval_every}")
        for a in self.eval.sample_at or ():
            if a % self.train.eval_every:
                raise invalid("eval.sample_at", a, f"must be a multiple of train.eval_every={self.train.eval_every}")
        if self.eval.clip_denoised and self.data.name == "latents":
            raise invalid("eval.clip_denoised", True, "false for latents: they have no bounded range to clip to")

    def with_train(self, **changes: Any) -> RunConfig:
        """This config with ``changes`` to its train section, checked again (:meth:`validate`)."""
        cfg = dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))
        cfg.validate()
        return cfg

    def with_eval(self, **changes: Any) -> RunConfig:
        """This config with ``changes`` to its eval section, checked again (:meth:`validate`)."""
        cfg = dataclasses.replace(self, eval=dataclasses.replace(self.eval, **changes))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scale": self.scale,
            "method": self.method,
            "seed": self.seed,
            "model": self.model.to_dict(),
            "objective": self.objective.to_dict(),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
            # only when set: the recorded configurations of runs without one stay as they were
            **({"regularizer": copy.deepcopy(self.regularizer)} if self.regularizer is not None else {}),
        }


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, values: Any, prefix: str):
    values = as_mapping(prefix, values)
    check_keys(prefix, values, _fields(cls))
    values = dict(values)
    for k in ("betas", "metrics", "sample_at"):
        if k in values and isinstance(values[k], list):
            values[k] = tuple(values[k])
    return cls(**values)


# ------------------------------------------------------------------------------------------
# params.yaml
# ------------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> Any:
    """A YAML file's data, read safely; duplicate keys and syntax errors raise :class:`ConfigError` naming the file."""
    try:
        return read_yaml(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml``, read and checked (:func:`check_params`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: {str(path)!r} is not a file; give --params PATH to a params.yaml")
    params = load_yaml(path)
    check_params(params, str(path))
    return params


def _entries(params: dict[str, Any], kind: str, sections: tuple[str, ...], holding: str):
    """``(prefix, settings)`` of each named entry of ``params[kind]``, after checking that its name can be a
    folder name and that it is a mapping of known ``sections`` (``holding`` says what it holds)."""
    for name, entry in params[kind].items():
        prefix = f"{kind}.{name}"
        check_name(kind, name)
        if not isinstance(entry, dict):
            raise invalid(prefix, entry, f"must be a mapping of {holding}")
        check_keys(prefix, entry, sections, "section")
        yield prefix, entry


def check_params(params: Any, source: str = "params") -> None:
    """Every section and key of a params mapping is known and has the right shape (values are checked per run)."""
    if not isinstance(params, dict):
        raise invalid(source, type(params).__name__, "must be a mapping with 'scales' and 'methods'")
    check_keys("params", params, TOP_SECTIONS, "section")
    for section in TOP_SECTIONS:
        if not isinstance(params.get(section), dict) or not params[section]:
            raise invalid(section, params.get(section), "must be a non-empty mapping of names to settings")
    model_keys = ["name", *MODEL_FIELDS]
    eval_keys = _fields(EvalConfig)
    for prefix, m in _entries(params, "methods", METHOD_SECTIONS, "an objective (and optionally model, eval)"):
        if "objective" not in m:
            raise ConfigError(f"{prefix}.objective: missing; every method needs an objective with a name")
        objective = m["objective"]
        if not isinstance(objective, dict) or "name" not in objective:
            raise invalid(f"{prefix}.objective", objective, "must be a mapping with a name: ddpm, interpolant or edm")
        check_keys(f"{prefix}.model", as_mapping(f"{prefix}.model", m.get("model")), model_keys)
        check_keys(f"{prefix}.eval", as_mapping(f"{prefix}.eval", m.get("eval")), eval_keys)
        if "regularizer" in m and (not isinstance(m["regularizer"], dict) or "name" not in m["regularizer"]):
            raise invalid(f"{prefix}.regularizer", m["regularizer"], "must be a mapping with a name: dispersive or sra")
    train_keys = [k for k in _fields(TrainConfig) if k != "step_scale"]  # step_scale is set by equal_cost
    for prefix, s in _entries(params, "scales", SCALE_SECTIONS, "sections"):
        for section, keys in (
            ("model", model_keys),
            ("data", _fields(DataConfig)),
            ("train", train_keys),
            ("eval", eval_keys),
        ):
            check_keys(f"{prefix}.{section}", as_mapping(f"{prefix}.{section}", s.get(section)), keys)
        if "methods" in s:
            methods = s["methods"]
            if not isinstance(methods, list) or len(set(map(str, methods))) != len(methods):
                raise invalid(f"{prefix}.methods", methods, "must be a list of distinct method names")
            for method in methods:
                if method not in params["methods"]:
                    raise invalid(f"{prefix}.methods", method, f"allowed: {', '.join(params['methods'])}")
        if "seeds" in s:
            _check_seeds(f"{prefix}.seeds", s["seeds"])
        if "extra_seeds" in s:
            _check_extra_seeds(prefix, s, params["methods"])


def _check_seeds(where: str, seeds: Any) -> None:
    ok = isinstance(seeds, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    if not ok or any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise invalid(where, seeds, "must be a list of distinct non-negative integers")


def _check_extra_seeds(prefix: str, s: dict[str, Any], methods: dict[str, Any]) -> None:
    """``extra_seeds: {methods: [...], seeds: [...]}``: more seeds for some of the scale's methods (the paired
    comparison that needs them), none of them already in ``seeds``."""
    where = f"{prefix}.extra_seeds"
    extra = s["extra_seeds"]
    if not isinstance(extra, dict) or set(extra) != {"methods", "seeds"}:
        raise invalid(where, extra, "must be a mapping with exactly the keys methods and seeds")
    listed = s.get("methods", [])
    if not isinstance(extra["methods"], list) or not extra["methods"]:
        raise invalid(f"{where}.methods", extra["methods"], "must be a non-empty list of the scale's methods")
    for method in extra["methods"]:
        if method not in listed:
            raise invalid(f"{where}.methods", method, f"allowed: the scale's methods ({', '.join(map(str, listed))})")
    _check_seeds(f"{where}.seeds", extra["seeds"])
    again = sorted(set(extra["seeds"]) & set(s.get("seeds", [])))
    if again:
        raise invalid(f"{where}.seeds", again, f"already in {prefix}.seeds; extra seeds must be new")


# ------------------------------------------------------------------------------------------
# Data checks
# ------------------------------------------------------------------------------------------


def check_against_data(cfg: RunConfig, where) -> None:
    """Settings the data set cannot serve: image size, channels and classes, more images than it holds, a
    reference split or size that does not exist. ``where(section, key)`` names the field in errors."""
    d, m, e = cfg.data, cfg.model, cfg.eval
    if d.name == "fashion-mnist":
        for key in ("input_size", "in_channels", "num_classes"):
            want = FASHION_MNIST[key]
            if getattr(m, key) != want:
                raise invalid(where("model", key), getattr(m, key), f"Fashion-MNIST needs {key} = {want}")
        if d.subset is not None and d.subset > FASHION_MNIST["train"]:
            raise invalid(
                where("data", "subset"), d.subset, f"must be <= {FASHION_MNIST['train']}, the training images"
            )
        if e.val_size > FASHION_MNIST["test"]:
            raise invalid(where("eval", "val_size"), e.val_size, f"must be <= {FASHION_MNIST['test']}, the test images")
        if e.metrics and e.reference_size is not None and e.reference_size > FASHION_MNIST[e.reference]:
            n = FASHION_MNIST[e.reference]
            raise invalid(
                where("eval", "reference_size"), e.reference_size, f"must be <= {n}, the {e.reference} images"
            )
    else:
        if e.metrics:
            allowed = f"sample metrics need Fashion-MNIST data; use [] for {d.name}"
            raise invalid(where("eval", "metrics"), list(e.metrics), allowed)
        if d.name == "synthetic":
            n = d.subset or SYNTHETIC_DEFAULT_SIZE
            if e.val_size > n:
                raise invalid(where("eval", "val_size"), e.val_size, f"must be <= {n}, the synthetic data's size")


# ------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------


def runs_of(params: dict[str, Any], scale: str) -> list[tuple[str, int]]:
    """(method, seed) pairs a scale runs."""
    check_params(params)
    if scale not in params["scales"]:
        raise invalid("--scale", scale, f"allowed: {', '.join(params['scales'])}")
    s = params["scales"][scale]
    for key in ("methods", "seeds"):
        if key not in s:
            raise ConfigError(f"scales.{scale}.{key}: missing; a scale that runs as a set lists its {key}")
    runs = [(m, seed) for m in s["methods"] for seed in s["seeds"]]
    extra = s.get("extra_seeds")
    if extra:
        runs += [(m, seed) for m in extra["methods"] for seed in extra["seeds"]]
    return runs
