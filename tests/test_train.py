"""The training loop: resume, DDP equivalence, divergence, cost accounting, configuration errors."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from repro.build import from_dict, resolve
from repro.config import RunConfig, load_params, runs_of
from repro.experiments.train import MicroBatch, RunState, TrainingDiverged, draw_micro_batch, train, train_step
from repro.models import DiT, train_step_macs
from repro.objectives import make_objective


def tiny_run(tmp_path=None, **train_overrides) -> RunConfig:
    """A synthetic-data run small enough for a test: no files, no FID, validation loss only."""
    d = {
        "run_id": "test-sit-s0",
        "scale": "smoke",
        "method": "sit",
        "seed": 0,
        "model": dict(
            input_size=8,
            patch_size=2,
            in_channels=1,
            hidden_size=32,
            depth=4,
            num_heads=2,
            num_classes=4,
            learn_sigma=False,
            routes=[(1, 2, 0.5)],
        ),
        "objective": {"name": "interpolant"},
        "data": {"name": "synthetic", "subset": 96},
        "train": {
            **dict(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, eval_every=3, ckpt_every=2, log_every=1),
            **train_overrides,
        },
        "eval": dict(metrics=[], val_size=8, val_points=2),
    }
    return from_dict(d)


def state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def test_run_directory_and_curve(tmp_path):
    curve = train(tiny_run(), tmp_path / "run", quiet=True)
    saved = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert saved["points"] == curve["points"]
    assert [p["step"] for p in curve["points"]] == [3, 6]
    for p in curve["points"]:
        assert p["images"] == p["step"] * 8
        assert p["macs"] == p["step"] * curve["train_step_macs"]
        assert p["seconds"] > 0 and p["val_loss"] > 0
    assert curve["provenance"]["torch"] == torch.__version__ and curve["provenance"]["seed"] == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert from_dict(cfg).to_dict() == tiny_run().to_dict()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_resume_is_bitwise_identical(tmp_path):
    cfg = tiny_run()
    train(cfg, tmp_path / "full", quiet=True)
    train(cfg, tmp_path / "split", quiet=True, stop_after=4)  # interrupted after the step-4 checkpoint
    assert state(tmp_path / "split")["step"] == 4
    assert not (tmp_path / "split" / "curve.json").exists()
    train(cfg, tmp_path / "split", quiet=True)
    a, b = state(tmp_path / "full"), state(tmp_path / "split")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    pa = json.loads((tmp_path / "full" / "curve.json").read_text())["points"]
    pb = json.loads((tmp_path / "split" / "curve.json").read_text())["points"]
    assert [p["val_loss"] for p in pa] == [p["val_loss"] for p in pb]


@pytest.mark.parametrize("log_every", [1, 6])
def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch, log_every):
    """The 5th training step (0-based step 4) returns NaN. The loss is read back only at log steps and
    before checkpoints: with a log line every step the run stops at once, with one every 6 steps it stops
    at the step-6 checkpoint; either way last.pt is the step-4 state, finite, never the diverged one."""
    from repro.objectives.interpolant import Interpolant

    calls = {"n": 0}
    real = Interpolant.loss_at

    def poisoned(self, model, x0, y, t, noise, generator=None):
        loss = real(self, model, x0, y, t, noise, generator)
        if not torch.is_grad_enabled():  # the validation loss
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(Interpolant, "loss_at", poisoned)
    with pytest.raises(TrainingDiverged, match=r"^step 4 |^steps 4-5 "):
        train(tiny_run(log_every=log_every), tmp_path / "run", quiet=True)
    ck = state(tmp_path / "run")
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert not (tmp_path / "run" / "curve.json").exists()


def test_grad_accum_counts_the_global_batch(tmp_path):
    """grad_accum splits the global batch; the images counted per step are the whole global batch."""
    cfg = tiny_run(grad_accum=2)
    curve = train(cfg, tmp_path / "acc", quiet=True)
    assert curve["complete"] and curve["points"][-1]["images"] == 6 * 8


def _split(b: MicroBatch, rows: slice) -> MicroBatch:
    """The rows of a micro-batch, with their own draws (label dropout, kept tokens), as a smaller micro-batch."""
    d = b.draws
    draws = type(d)(
        None if d.drop_ids is None else d.drop_ids[rows],
        tuple(ids[rows] for ids in d.keep_ids),
        tuple(u[rows] for u in d.depth_draws),
    )
    return MicroBatch(b.x[rows], b.y[rows], b.t[rows], b.noise[rows], draws)


def test_grad_accum_equals_one_step_on_the_whole_batch():
    """A step over micro-batches is a step on their union: the loss is the mean over the global batch, so the
    gradient of 2 accumulated halves is that of the whole batch. In float64 the two differ only by the order of the
    sums (a relative 1e-15 each; 1e-10 of the gradient's size leaves a wide margin), while the first half alone, or
    the halves summed instead of averaged, miss by order 1. SGD, so the weights move by exactly -lr * gradient (Adam's
    first step would hide a gradient's scale)."""
    cfg = tiny_run().model  # TREAD routes and label dropout: per-sample draws that must follow their rows
    objective = make_objective("interpolant")
    torch.manual_seed(0)
    model = DiT(cfg).double().train()
    with torch.no_grad():  # leave adaLN-zero's identity start, so every parameter gets a gradient
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g, dtype=torch.float64)
    y = torch.randint(0, cfg.num_classes, (8,), generator=g)
    whole = draw_micro_batch(objective, model, x, y, g)
    halves = [_split(whole, slice(0, 4)), _split(whole, slice(4, 8))]

    def step(batches):
        net = copy.deepcopy(model)
        state = RunState(net, copy.deepcopy(net).requires_grad_(False), torch.optim.SGD(net.parameters(), lr=0.1))
        loss = train_step(
            state, net, objective, batches, SimpleNamespace(precision="fp32", grad_clip=None, ema_decay=0.9)
        )
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.requires_grad])
        weights = torch.cat([p.detach().flatten() for p in net.parameters()])
        return loss, grads, weights

    loss_1, grad_1, w_1 = step([whole])
    loss_2, grad_2, w_2 = step(halves)
    _, grad_half, _ = step(halves[:1])
    scale = grad_1.abs().max().item()
    assert torch.allclose(loss_2, loss_1, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_2, grad_1, atol=1e-10 * scale, rtol=0)
    torch.testing.assert_close(w_2, w_1, atol=1e-10 * scale, rtol=0)
    assert (grad_half - grad_1).abs().max() > 0.05 * scale  # a step on the first half alone is another step


def _ddp_worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train(tiny_run(), out_dir, device="cpu", quiet=True)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_same_global_batch(tmp_path):
    # two gloo processes with half the batch each == one process accumulating the same two halves
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, start_method="spawn")
    train(tiny_run(grad_accum=2), tmp_path / "single", device="cpu", quiet=True)
    a, b = state(tmp_path / "ddp"), state(tmp_path / "single")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "ddp" / "curve.json").read_text())["provenance"]["world_size"] == 2


def test_train_step_macs_counts_routing_saving():
    cfg = tiny_run().model
    routed = train_step_macs(cfg, 8)
    dense = train_step_macs(cfg.replace(routes=()), 8)
    assert routed < dense
    # stochastic depth over the same blocks at the same rate saves about as much as the route
    sd = train_step_macs(cfg.replace(routes=(), stochastic_depth=(1, 2, 0.5)), 8)
    assert routed < sd < dense


@pytest.mark.slow
def test_params_resolve_every_scale_and_method():
    params = load_params()
    for scale in ("smoke", "micro", "small", "paper"):
        for method, seed in runs_of(params, scale):
            cfg = resolve(params, scale, method, seed)
            assert cfg.run_id == f"{scale}-{method}-s{seed}"
    tread = resolve(params, "micro", "tread", 0).model
    assert [(r.start, r.end, r.rate) for r in tread.routes] == [(2, tread.depth - 4, 0.5)]
    sd = resolve(params, "micro", "stochastic-depth", 0).model.stochastic_depth
    assert (sd.start, sd.end, sd.prob) == (2, tread.depth - 4, 0.5)


@pytest.mark.slow
def test_paper_scale_dry_run():
    """DiT-XL/2 at batch 256 on ImageNet-256 latents: the model builds and a step's cost is counted."""
    params = load_params()
    dit, tread = resolve(params, "paper", "dit", 0), resolve(params, "paper", "tread", 0)
    assert dit.model.depth == 28 and dit.model.hidden_size == 1152 and dit.train.batch_size == 256
    assert [(r.start, r.end) for r in tread.model.routes] == [(2, 24)]
    with torch.device("meta"):
        model = DiT(dit.model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == pytest.approx(675e6, rel=0.001)
    dense, routed = train_step_macs(dit.model, 1), train_step_macs(tread.model, 1)
    # a training step is about 3 forward passes (forward + backward); DiT-XL/2's forward is 118.6 GMACs
    assert 3 * 118e9 < dense < 3 * 120e9
    assert 1.5 < dense / routed < 2.0


@pytest.mark.parametrize(
    "section,key,value,field",
    [
        ("train", "steps", 0, "train.steps"),
        ("train", "precision", "fp8", "train.precision"),
        ("train", "ema_decay", 1.5, "train.ema_decay"),
        ("train", "stpes", 5, "train.stpes: unknown key"),
        ("eval", "metrics", ["fid", "is"], "eval.metrics"),
        ("data", "name", "cifar", "data.name"),
    ],
)
def test_bad_run_config_names_the_field(section, key, value, field):
    d = tiny_run().to_dict()
    d[section][key] = value
    with pytest.raises(ValueError) as err:
        from_dict(d)
    assert field in str(err.value)


def test_objective_and_learned_sigma_must_agree():
    d = tiny_run().to_dict()
    d["objective"] = {"name": "ddpm"}
    with pytest.raises(ValueError, match="learn_sigma"):
        from_dict(d)


def test_equal_mac_budget_gives_cheaper_steps_more_steps():
    params = load_params()
    params["scales"]["micro"]["train"]["equal_cost"] = "macs"
    dit, tread = resolve(params, "micro", "dit", 0), resolve(params, "micro", "tread", 0)
    assert tread.train.steps > dit.train.steps
    budget_dit = dit.train.steps * train_step_macs(dit.model, dit.train.batch_size)
    budget_tread = tread.train.steps * train_step_macs(tread.model, tread.train.batch_size)
    assert budget_tread == pytest.approx(budget_dit, rel=2 / dit.train.steps)


def test_scales_that_measure_speedups_give_every_method_the_same_budget():
    # equal steps would stop a routed run's curve short of the dense run's cost: "not reached" by construction
    params = load_params()
    for scale in ("smoke", "micro", "small"):
        train = params["scales"][scale]["train"]
        assert train.get("equal_cost") == "macs" or train.get("max_seconds"), scale


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["smoke", "micro"])
@pytest.mark.parametrize("method", ["tread", "stochastic-depth"])
def test_equal_mac_budget_evaluates_at_the_dense_runs_mac_points(scale, method):
    params = load_params()
    dit, other = resolve(params, scale, "dit", 0), resolve(params, scale, method, 0)
    dense_evals = [s for s in range(1, dit.train.steps + 1) if dit.train.is_eval_step(s)]
    evals = [s for s in range(1, other.train.steps + 1) if other.train.is_eval_step(s)]
    assert len(evals) == len(dense_evals) and evals[-1] == other.train.steps  # the last step once, no extra
    dense, cheap = (train_step_macs(r.model, r.train.batch_size) for r in (dit, other))
    assert cheap < dense
    for s_dense, s in zip(dense_evals, evals):
        assert abs(s * cheap - s_dense * dense) <= 0.5 * cheap  # the nearest step to the same MACs


def test_schedule_without_a_step_scale_is_every_k_steps_and_the_last():
    t = dataclasses.replace(tiny_run().train, steps=10, eval_every=3)
    assert [s for s in range(1, 11) if t.is_eval_step(s)] == [3, 6, 9, 10]
    with pytest.raises(ValueError, match="train.step_scale"):
        tiny_run(step_scale=0).validate()


def test_time_budget_stops_with_a_final_evaluation(tmp_path):
    curve = train(tiny_run(max_seconds=1e-9), tmp_path / "run", quiet=True)
    assert curve["complete"] and [p["step"] for p in curve["points"]] == [1]


def test_batches_walk_each_epoch_once_across_boundaries():
    from repro.data.loader import TrainData

    cfg = tiny_run()
    data = TrainData(cfg)  # 96 synthetic items
    batch = 40  # does not divide 96: batches straddle epoch boundaries
    idx = torch.cat([data.batch_indices(step, batch) for step in range(12)])  # 480 = 5 epochs
    for epoch in range(5):
        assert sorted(idx[96 * epoch : 96 * (epoch + 1)].tolist()) == list(range(96))
    assert not torch.equal(idx[:96], idx[96:192])  # each epoch is reshuffled
    fresh = TrainData(cfg)
    assert torch.equal(fresh.batch_indices(7, batch), data.batch_indices(7, batch))  # a function of (seed, step)


def test_curve_records_the_training_set_size(tmp_path):
    curve = train(tiny_run(), tmp_path / "run", quiet=True)
    assert curve["train_size"] == 96  # the synthetic subset: epochs = images / 96


@pytest.mark.slow
def test_clip_denoised_is_a_scale_setting_on_for_the_micro_campaign_and_refused_for_latents():
    params = load_params()
    for method, seed in runs_of(params, "smoke")[:4]:  # the smoke goldens were made unclipped
        assert "clip_denoised" not in resolve(params, "smoke", method, seed).objective
    for method, seed in runs_of(params, "micro"):  # pixels: every micro run clips, whatever its objective
        cfg = resolve(params, "micro", method, seed)
        assert cfg.objective["clip_denoised"] is True and cfg.eval.clip_denoised is True
    params["scales"]["smoke"]["eval"]["clip_denoised"] = True
    for method in params["scales"]["smoke"]["methods"]:
        assert resolve(params, "smoke", method, 0).objective["clip_denoised"] is True
    params["scales"]["paper"]["eval"]["clip_denoised"] = True
    with pytest.raises(ValueError, match="eval.clip_denoised: True is not allowed; false for latents"):
        resolve(params, "paper", "dit", 0)
    d = tiny_run().to_dict()
    d["eval"]["fid_blocks"] = 0
    with pytest.raises(ValueError, match="eval.fid_blocks: 0"):
        from_dict(d)


@pytest.mark.usefixtures("fashion_mnist_data")
def test_evaluation_stores_the_fid_sd_from_disjoint_blocks(monkeypatch):
    from repro.data.loader import TrainData, validation_batch
    from repro.experiments.evaluation import evaluate
    from repro.metrics import fid
    from repro.objectives import make_objective

    calls = []

    def fake(samples, reference="test", metrics=fid.METRICS, **kwargs):
        calls.append(len(samples))
        return {"fid": 10.0 + float(samples.float().mean()), "kid": 0.0, "precision": 1.0, "recall": 1.0}

    monkeypatch.setattr(fid, "compute_metrics", fake)
    d = tiny_run().to_dict()
    d["model"].update(input_size=32, patch_size=8, num_classes=10, routes=[])
    d["data"] = {"name": "fashion-mnist", "subset": 64}
    d["eval"].update(metrics=["fid"], num_samples=40, sample_steps=2, batch_size=40, fid_blocks=4)
    cfg = from_dict(d)
    model = DiT(cfg.model).eval()
    out = evaluate(
        model, make_objective(**cfg.objective), cfg, torch.device("cpu"), validation_batch(cfg, TrainData(cfg))
    )
    assert calls == [40, 10, 10, 10, 10]
    assert len(out["fid_blocks"]) == 4 and out["fid_sd"] == pytest.approx(fid.fid_sd_from_blocks(out["fid_blocks"]))
    d["eval"]["fid_blocks"] = 1  # the default: no blocks, no new fields
    calls.clear()
    cfg = from_dict(d)
    out = evaluate(
        model, make_objective(**cfg.objective), cfg, torch.device("cpu"), validation_batch(cfg, TrainData(cfg))
    )
    assert calls == [40] and "fid_sd" not in out and "fid_blocks" not in out


def test_progress_bar_and_dvclive_scalars(tmp_path, capsys):
    """Not quiet: a tqdm bar on stderr; live: DVCLive's files, the same losses as metrics.jsonl."""
    pytest.importorskip("dvclive")
    from pathlib import Path

    dvc_yaml = Path(__file__).resolve().parent.parent / "dvc.yaml"
    before = dvc_yaml.read_bytes()
    train(tiny_run(log_every=2), tmp_path / "run", live=True)
    assert dvc_yaml.read_bytes() == before  # the project's pipeline file is never touched
    err = capsys.readouterr().err
    assert "test-sit-s0" in err and "6/6" in err
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tsv = (tmp_path / "run" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:2] == ["step", "loss"]
    rows = [line.split("\t") for line in tsv[1:]]
    assert [int(r[0]) for r in rows] == [e["step"] for e in logged] == [2, 4, 6]
    assert [float(r[1]) for r in rows] == pytest.approx([e["loss"] for e in logged], rel=1e-6)


def test_logged_loss_is_the_mean_since_the_last_line(tmp_path, monkeypatch):
    """metrics.jsonl's loss is the mean of the steps since the previous line, read back only there."""
    from repro.experiments import train as train_module

    seen = []
    real = train_module.train_step

    def spy(*args, **kwargs):
        loss = real(*args, **kwargs)
        seen.append(float(loss))
        return loss

    monkeypatch.setattr(train_module, "train_step", spy)
    train(tiny_run(log_every=3), tmp_path / "run", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [3, 6]
    assert [e["loss"] for e in logged] == pytest.approx([sum(seen[:3]) / 3, sum(seen[3:]) / 3], rel=1e-6)
