"""The resolved configuration is frozen (a change is a new, re-checked config), its objective is typed and reads
back from ``to_dict`` unchanged, and ``repro.config`` stays a leaf at run time as well as in its source."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.build import from_dict, resolve
from repro.config import MODEL_FIELDS, ConfigError, ObjectiveConfig, load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def test_the_resolved_config_and_its_sections_are_frozen(params):
    cfg = resolve(params, "smoke", "tread", 0)
    for obj, name, value in (
        (cfg, "seed", 1),
        (cfg, "objective", {"name": "edm"}),
        (cfg.train, "steps", 1),
        (cfg.eval, "metrics", ()),
        (cfg.data, "name", "synthetic"),
        (cfg.objective, "name", "edm"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)
    assert cfg.seed == 0 and cfg.objective.name == "ddpm" and cfg.train.steps > 1 and cfg.eval.metrics


def test_a_change_is_a_new_config_checked_again(params):
    cfg = resolve(params, "smoke", "dit", 0)
    before = json.dumps(cfg.to_dict())
    shorter = cfg.with_train(steps=3)
    assert shorter.train.steps == 3 and shorter.train.lr == cfg.train.lr and shorter.model is cfg.model
    assert cfg.with_eval(metrics=()).eval.metrics == ()
    assert json.dumps(cfg.to_dict()) == before  # the original is untouched
    with pytest.raises(ConfigError, match=r"^train\.steps: "):
        cfg.with_train(steps=0)
    with pytest.raises(ConfigError, match=r"^eval\.sample_every: .*multiple of train\.eval_every"):
        cfg.with_eval(sample_every=cfg.train.eval_every + 1)


def test_the_objective_is_typed_and_round_trips_through_to_dict(params):
    for scale in ("smoke", "micro"):
        for method in params["scales"][scale]["methods"]:
            cfg = resolve(params, scale, method, 0)
            assert isinstance(cfg.objective, ObjectiveConfig) and isinstance(cfg.objective.name, str)
            d = cfg.to_dict()
            assert list(d["objective"])[0] == "name" and d["objective"]["name"] == cfg.objective.name
            back = from_dict(json.loads(json.dumps(d)))
            assert back.objective == cfg.objective
            assert json.dumps(back.to_dict()) == json.dumps(d)
    # clip_denoised comes from eval and goes last, as it did when the objective was a dict
    cfg = dataclasses.replace(resolve(params, "smoke", "sit", 0))
    obj = ObjectiveConfig.from_dict({"name": "interpolant", "path": "linear"}).with_settings(clip_denoised=True)
    assert list(obj.to_dict()) == ["name", "path", "clip_denoised"] and dict(obj) == obj.to_dict()
    assert obj["path"] == "linear" and obj.get("sampler") is None and "clip_denoised" in obj
    assert {**obj} == {"name": "interpolant", "path": "linear", "clip_denoised": True}  # make_objective(**obj)
    assert cfg.objective != obj


def test_a_runconfig_given_a_mapping_objective_holds_a_typed_one(params):
    cfg = resolve(params, "smoke", "dit", 0)
    again = dataclasses.replace(cfg, objective={"name": "ddpm"})  # __post_init__ runs: it makes the typed one
    assert isinstance(again.objective, ObjectiveConfig) and again == cfg


def test_the_model_keys_are_the_model_config_fields():
    from repro.models import DiTConfig

    assert MODEL_FIELDS == tuple(f.name for f in dataclasses.fields(DiTConfig))


def test_importing_config_loads_no_model_objective_metric_training_or_data_module():
    code = "import sys, repro.config; print(sorted(m for m in sys.modules if m.startswith('repro')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    loaded = eval(out.stdout)
    assert "repro.config" in loaded
    heavy = (
        "repro.models",
        "repro.objectives",
        "repro.metrics",
        "repro.experiments.train",
        "repro.data",
        "repro.build",
    )
    assert not [m for m in loaded if m.startswith(heavy)], loaded
