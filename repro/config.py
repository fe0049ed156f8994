"""Typed run configuration, resolved from ``params.yaml``: scale x method x seed -> one :class:`RunConfig`.

``params.yaml`` holds ``scales`` (model size, data, training and evaluation settings, the methods
and seeds each scale runs) and ``methods`` (objective and model flags of each method, the same at
every scale). A method's ``routes: tread`` means TREAD's official route for the scale's depth (block
2 to block depth-4 at rate 0.5); ``stochastic_depth: tread`` skips the same blocks per sample with
probability 0.5, the same expected saving.

Every field is checked: a bad value fails with its dotted name, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .models import DiTConfig, config_for, tread_routes
from .models.routing import StochasticDepth

SCALES = ("smoke", "micro", "small", "paper")
PRECISIONS = ("fp32", "bf16")
DATASETS = ("fashion-mnist", "latents", "synthetic")


def _err(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is not allowed; {allowed}")


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise _err(name, v, "must be a positive integer")


def _number(name: str, v: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _err(name, v, "must be a number")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _err(name, v, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and v > hi:
        raise _err(name, v, f"must be <= {hi}")


@dataclass
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

    def _on_schedule(self, step: int, every: int) -> bool:
        if step == self.steps:
            return True
        interval = every * self.step_scale
        k = round(step / interval)
        return k >= 1 and round(k * interval) == step

    def is_eval_step(self, step: int) -> bool:
        """Whether the run evaluates after ``step`` steps (always after the last one)."""
        return self._on_schedule(step, self.eval_every)

    def is_ckpt_step(self, step: int) -> bool:
        return self._on_schedule(step, self.ckpt_every)

    def validate(self, prefix: str = "train") -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "ckpt_every", "log_every"):
            _positive_int(f"{prefix}.{name}", getattr(self, name))
        _number(f"{prefix}.lr", self.lr, 0, lo_open=True)
        _number(f"{prefix}.weight_decay", self.weight_decay, 0)
        _number(f"{prefix}.ema_decay", self.ema_decay, 0, 1)
        if self.grad_clip is not None:
            _number(f"{prefix}.grad_clip", self.grad_clip, 0, lo_open=True)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise _err(f"{prefix}.betas", self.betas, "must be two numbers in [0, 1)")
        if self.precision not in PRECISIONS:
            raise _err(f"{prefix}.precision", self.precision, f"allowed: {', '.join(PRECISIONS)}")
        if self.equal_cost not in (None, "macs"):
            raise _err(f"{prefix}.equal_cost", self.equal_cost, "allowed: macs, or null for equal steps")
        if self.max_seconds is not None:
            _number(f"{prefix}.max_seconds", self.max_seconds, 0, lo_open=True)
        _number(f"{prefix}.step_scale", self.step_scale, 0, lo_open=True)
        if self.batch_size % self.grad_accum:
            raise _err(f"{prefix}.batch_size", self.batch_size, f"must be divisible by grad_accum={self.grad_accum}")


@dataclass
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

    def validate(self, prefix: str = "eval") -> None:
        for name in ("num_samples", "sample_steps", "val_size", "val_points", "batch_size"):
            _positive_int(f"{prefix}.{name}", getattr(self, name))
        _number(f"{prefix}.guidance_scale", self.guidance_scale, 0)
        bad = [m for m in self.metrics if m not in ("fid", "kid", "prc")]
        if bad:
            raise _err(f"{prefix}.metrics", list(self.metrics), "allowed entries: fid, kid, prc")


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    subset: int | None = None  # use only the first N training images (after the seeded shuffle)
    path: str | None = None  # latents: folder of shards written by repro.data.latents

    def validate(self, prefix: str = "data") -> None:
        if self.name not in DATASETS:
            raise _err(f"{prefix}.name", self.name, f"allowed: {', '.join(DATASETS)}")
        if self.subset is not None:
            _positive_int(f"{prefix}.subset", self.subset)
        if self.name == "latents" and not self.path:
            raise _err(f"{prefix}.path", self.path, "latents need the folder of encoded shards")


@dataclass
class RunConfig:
    run_id: str
    scale: str
    method: str
    seed: int
    model: DiTConfig
    objective: dict[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if self.scale not in SCALES:
            raise _err("scale", self.scale, f"allowed: {', '.join(SCALES)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise _err("seed", self.seed, "must be a non-negative integer")
        self.data.validate()
        self.train.validate()
        self.eval.validate()
        from .objectives import make_objective

        objective = make_objective(**self.objective)  # raises with the field's name on bad settings
        wants_sigma = getattr(objective, "learn_sigma", False)
        if wants_sigma != self.model.learn_sigma:
            raise _err(
                "model.learn_sigma",
                self.model.learn_sigma,
                f"objective {self.objective['name']!r} needs learn_sigma={wants_sigma}",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scale": self.scale,
            "method": self.method,
            "seed": self.seed,
            "model": self.model.to_dict(),
            "objective": dict(self.objective),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = copy.deepcopy(d)
        cfg = cls(
            run_id=d["run_id"],
            scale=d["scale"],
            method=d["method"],
            seed=d["seed"],
            model=DiTConfig(**d["model"]),
            objective=d["objective"],
            data=_build(DataConfig, d.get("data", {}), "data"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
            eval=_build(EvalConfig, d.get("eval", {}), "eval"),
        )
        cfg.validate()
        return cfg


def _build(cls, values: dict[str, Any], prefix: str):
    if not isinstance(values, dict):
        raise _err(prefix, values, "must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{prefix}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    values = dict(values)
    for k in ("betas", "metrics"):
        if k in values and isinstance(values[k], list):
            values[k] = tuple(values[k])
    return cls(**values)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"params: {path} does not exist")
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict) or "scales" not in params or "methods" not in params:
        raise ValueError(f"params: {path} must map 'scales' and 'methods'")
    return params


def _model_config(model: dict[str, Any], prefix: str) -> DiTConfig:
    model = dict(model)
    name = model.pop("name", None)
    depth = model.get("depth") or (config_for(name).depth if name else DiTConfig().depth)
    if model.get("routes") == "tread":
        model["routes"] = tread_routes(depth)
    sd = model.get("stochastic_depth")
    if sd == "tread":
        r = tread_routes(depth)[0]
        model["stochastic_depth"] = StochasticDepth(r.start, r.end, r.rate)
    try:
        return config_for(name, **model) if name else DiTConfig(**model)
    except TypeError as e:  # unknown keyword
        raise ValueError(f"{prefix}: {e}") from None


def resolve(params: dict[str, Any], scale: str, method: str, seed: int) -> RunConfig:
    """The complete configuration of one run: the scale's settings merged with the method's."""
    scales, methods = params["scales"], params["methods"]
    if scale not in scales:
        raise _err("scale", scale, f"allowed: {', '.join(scales)}")
    if method not in methods:
        raise _err("method", method, f"allowed: {', '.join(methods)}")
    s, m = scales[scale], methods[method]
    model = {**s.get("model", {}), **m.get("model", {})}
    cfg = RunConfig(
        run_id=f"{scale}-{method}-s{seed}",
        scale=scale,
        method=method,
        seed=seed,
        model=_model_config(model, f"methods.{method}.model"),
        objective=dict(m["objective"]),
        data=_build(DataConfig, s.get("data", {}), f"scales.{scale}.data"),
        train=_build(TrainConfig, s.get("train", {}), f"scales.{scale}.train"),
        eval=_build(EvalConfig, {**s.get("eval", {}), **m.get("eval", {})}, f"scales.{scale}.eval"),
    )
    if cfg.train.equal_cost == "macs":
        equalize_macs(cfg)
    cfg.validate()
    return cfg


def equalize_macs(cfg: RunConfig) -> None:
    """Scale the step count by (dense step MACs) / (this method's step MACs); evaluations and checkpoints
    follow at the same MAC points as the dense run's (``TrainConfig.step_scale``)."""
    if not cfg.model.routes and cfg.model.stochastic_depth is None:
        return
    from .audit import train_step_macs

    dense = cfg.model.replace(routes=(), stochastic_depth=None)
    ratio = train_step_macs(dense, cfg.train.batch_size) / train_step_macs(cfg.model, cfg.train.batch_size)
    t = cfg.train
    t.step_scale = ratio
    t.steps = max(1, round(t.steps * ratio))


def runs_of(params: dict[str, Any], scale: str) -> list[tuple[str, int]]:
    """(method, seed) pairs a scale runs."""
    s = params["scales"][scale]
    return [(m, seed) for m in s["methods"] for seed in s["seeds"]]
