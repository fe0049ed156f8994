"""pytest-benchmark timings of the micro scale's training step (per method) and of a 2-step sampler run.

In the default test run benchmarks are disabled (``--benchmark-disable`` in pyproject.toml): each
function runs once and only its result is checked. For numbers, on whatever device runs the tests:

    pytest tests/test_benchmarks.py --benchmark-enable

Timings are printed by pytest-benchmark (time per call, on the CPU with the threads torch picks); no test
asserts on a timing. ``repro bench`` gives the same comparison with MACs and MFU.
"""

from __future__ import annotations

import math

import pytest
import torch

from repro.build import resolve
from repro.config import load_params
from repro.models import DiT
from repro.objectives import make_objective


def _micro(method: str):
    cfg = resolve(load_params(), "micro", method, 0)
    torch.manual_seed(0)
    model = DiT(cfg.model)
    return cfg, model, make_objective(**cfg.objective)


@pytest.mark.parametrize("method", ["dit", "tread", "stochastic-depth", "sit"])
def test_micro_train_step(benchmark, method):
    cfg, model, objective = _micro(method)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    g = torch.Generator().manual_seed(0)
    b = cfg.train.batch_size
    x = torch.rand(b, cfg.model.in_channels, cfg.model.input_size, cfg.model.input_size, generator=g) * 2 - 1
    y = torch.randint(0, cfg.model.num_classes, (b,), generator=g)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = objective.loss(model, x, y, torch.Generator().manual_seed(1)).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    benchmark.extra_info["images_per_call"] = b
    assert math.isfinite(benchmark(step))


@pytest.mark.parametrize("method", ["dit", "sit"])
def test_micro_sampler(benchmark, method):
    cfg, model, objective = _micro(method)
    model.eval()
    n = 16
    noise = torch.randn(n, cfg.model.in_channels, cfg.model.input_size, cfg.model.input_size)
    labels = torch.arange(n) % cfg.model.num_classes

    def sample() -> torch.Tensor:
        with torch.no_grad():
            return objective.sample(model, noise, labels, steps=2, generator=torch.Generator().manual_seed(0))

    benchmark.extra_info["samples_per_call"] = n
    out = benchmark(sample)
    assert out.shape == noise.shape and torch.isfinite(out).all()
