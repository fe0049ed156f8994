"""The training loop: any model variant x objective x data x scale, on CPU, one GPU, or torchrun + DDP.

A run directory holds ``config.json`` (the resolved :class:`~repro.config.RunConfig`), ``metrics.jsonl``
(one line per logged step), ``checkpoints/last.pt`` (atomic) and ``curve.json``: one point per
evaluation with its cost (step, images seen, counted training MACs, training wall-clock seconds on
the named device) and its quality (FID / KID / precision / recall of the EMA weights, and the
validation loss at fixed noise levels).

Determinism. The data order is a function of ``(seed, step)``, and the noise, label dropout and
routing of each micro-batch draw from a generator seeded by ``(seed, step, shard)``, where the shard
is ``rank * grad_accum + accumulation index``. Nothing random is carried in memory, so a run resumed
from a checkpoint ends bitwise identical to an uninterrupted one on CPU, and one process with
``grad_accum = k`` computes the same gradients as ``k`` DDP processes with ``grad_accum = 1`` (up to
the order of floating-point sums).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import ConfigError, RunConfig, check_data_files, load_params, resolve
from .io import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
)
from .models import DiT, train_step_macs
from .objectives import make_objective
from .provenance import run_provenance

SEED_STRIDE = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


class RunDirectoryError(ValueError):
    """A run directory that this run must not write: another run's, or one that another process is writing."""


LOCK_FILE = ".lock"
CHECKPOINT_KEYS = ("config", "model", "ema", "opt", "step", "seconds", "points")


# ------------------------------------------------------------------------------------------
# Distributed setup
# ------------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) for a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> tuple[int, int]:
    rank, world, _ = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        try:
            dev = torch.device(requested)
        except (RuntimeError, TypeError):
            raise ConfigError(f"--device: {requested!r} is not allowed; a device such as cpu, cuda or cuda:1") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device: {requested!r} is not allowed; CUDA is not available here (use cpu)")
        if dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"--device: {requested!r} is not allowed; training runs on cpu or cuda")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info()[2])
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


class TrainData:
    """Training images (N, C, H, W) in [-1, 1] with labels; batches are a function of (seed, step)."""

    def __init__(self, cfg: RunConfig):
        d = cfg.data
        if d.name == "fashion-mnist":
            from .data import fashion_mnist

            ds = fashion_mnist.load("train")
            self.images, self.labels = ds.float_images(), ds.labels.long()
        elif d.name == "synthetic":
            g = torch.Generator().manual_seed(cfg.seed)
            n, c, s = d.subset or 1024, cfg.model.in_channels, cfg.model.input_size
            self.labels = torch.randint(0, cfg.model.num_classes, (n,), generator=g)
            # class-dependent blobs: learnable structure, no files needed
            base = torch.randn(cfg.model.num_classes, c, s, s, generator=g).tanh()
            self.images = (base[self.labels] + 0.1 * torch.randn(n, c, s, s, generator=g)).clamp(-1, 1)
        else:
            from .data.latents import LatentShards

            # the shards memory-mapped (ImageNet-256 latents are about 21 GB in float32): every batch is still
            # a uniform draw from the whole set, and each rank reads only the items of its slice
            mapped = LatentShards(d.path).mapped()
            self.images, self.labels = mapped, mapped.labels
        if d.subset is not None:
            self.images, self.labels = self.images[: d.subset], self.labels[: d.subset]
        self.seed = cfg.seed
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of the data for ``epoch`` (the last one drawn is kept: batches walk through it)."""
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
            self._order = (epoch, torch.randperm(len(self), generator=g))
        return self._order[1]

    def shard_indices(self, step: int, batch_size: int, shard: int, shards: int) -> torch.Tensor:
        """The items of ``step``'s global batch that micro-batch ``shard`` of ``shards`` (``rank * grad_accum +
        accumulation index`` of ``world * grad_accum``) trains on: consecutive equal slices of the batch."""
        micro = batch_size // shards
        return self.batch_indices(step, batch_size)[shard * micro : (shard + 1) * micro]

    def batch_indices(self, step: int, batch_size: int) -> torch.Tensor:
        """Indices of the global batch of ``step``: consecutive slices of a per-epoch permutation."""
        n = len(self)
        start = step * batch_size
        parts, taken = [], 0
        while taken < batch_size:
            epoch, offset = divmod(start + taken, n)
            take = min(batch_size - taken, n - offset)
            parts.append(self.epoch_order(epoch)[offset : offset + take])
            taken += take
        return torch.cat(parts)


def validation_batch(cfg: RunConfig, data: TrainData) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch of held-out images the validation loss is measured on: the first test images of
    Fashion-MNIST, else the last ``val_size`` items of the training data."""
    if cfg.data.name == "fashion-mnist":
        from .data import fashion_mnist

        ds = fashion_mnist.load("test")
        return ds.float_images()[: cfg.eval.val_size], ds.labels[: cfg.eval.val_size].long()
    return data.images[-cfg.eval.val_size :], data.labels[-cfg.eval.val_size :]


# ------------------------------------------------------------------------------------------
# Provenance, EMA, checkpoints
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def save_checkpoint(path: Path, model, ema, opt, step: int, extra: dict[str, Any]) -> None:
    atomic_torch_save(
        {
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            **extra,
        },
        path,
    )


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model, objective, cfg: RunConfig, device: torch.device, num: int | None = None) -> torch.Tensor:
    """``num`` class-balanced samples from fixed noise (the same at every evaluation), in [-1, 1]."""
    num = num or cfg.eval.num_samples
    m = cfg.model
    g = torch.Generator(device="cpu").manual_seed(cfg.eval.seed)
    noise = torch.randn(num, m.in_channels, m.input_size, m.input_size, generator=g)
    labels = torch.arange(num) % m.num_classes
    workers = torch.get_num_threads() if device.type == "cpu" else 1  # the same samples, all cores busy
    out = []
    for i in range(0, num, cfg.eval.batch_size):
        sg = torch.Generator(device="cpu").manual_seed(cfg.eval.seed + 1 + i)
        out.append(
            objective.sample(
                model,
                noise[i : i + cfg.eval.batch_size].to(device),
                labels[i : i + cfg.eval.batch_size].to(device),
                steps=cfg.eval.sample_steps,
                guidance_scale=cfg.eval.guidance_scale,
                generator=sg,
                workers=workers,
            )
            .float()
            .cpu()
        )
    return torch.cat(out)


def evaluate(model, objective, cfg: RunConfig, device: torch.device, val: tuple[torch.Tensor, torch.Tensor]) -> dict:
    from .objectives.base import SplitForward

    x, y = val
    g = torch.Generator(device="cpu").manual_seed(cfg.eval.seed)
    net = SplitForward(model, torch.get_num_threads()) if device.type == "cpu" else model  # the same numbers
    with torch.no_grad():
        val_loss = float(objective.fixed_t_loss(net, x.to(device), y.to(device), g, points=cfg.eval.val_points).mean())
    out: dict[str, Any] = {"val_loss": val_loss}
    if cfg.data.name == "fashion-mnist" and cfg.eval.metrics:
        from .metrics.fid import compute_metrics

        samples = generate(model, objective, cfg, device)
        res = compute_metrics(
            samples.clamp(-1, 1),
            reference=cfg.eval.reference,
            metrics=cfg.eval.metrics,
            reference_size=cfg.eval.reference_size,
            device=device,
        )
        out.update({k: res[k] for k in ("fid", "kid", "precision", "recall") if k in res})
        if "fid" in res and cfg.eval.fid_blocks > 1:
            from .metrics.fid import block_fids, fid_sd_from_blocks

            blocks = block_fids(
                samples.clamp(-1, 1),
                cfg.eval.fid_blocks,
                reference=cfg.eval.reference,
                reference_size=cfg.eval.reference_size,
                device=device,
            )
            out["fid_sd"] = fid_sd_from_blocks(blocks)
            out["fid_blocks"] = [float(b) for b in blocks]
    return out


# ------------------------------------------------------------------------------------------
# The run directory: one run's, written by one process at a time
# ------------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``, held while a process writes the run directory; the file
    names the holder's pid. The kernel releases the lock when the process ends, however it ends."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = Path(run_dir), None

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryError(
                f"{self.run_dir}: another process (pid {holder}) is writing this run directory; "
                "wait for it to end or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def config_differences(stored: Any, requested: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two configuration dicts differ."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        out = []
        for key in list(stored) + [k for k in requested if k not in stored]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in stored or key not in requested:
                out.append(name)
            else:
                out.extend(config_differences(stored[key], requested[key], name))
        return out
    return [] if stored == requested else [prefix or "(config)"]


def check_run_directory(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a run directory that holds another configuration's run (naming the fields that differ)."""
    config_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoints" / "last.pt"
    if not config_path.exists():
        if ckpt_path.exists():
            raise RunDirectoryError(
                f"{run_dir}: holds a checkpoint but no config.json, so it cannot be resumed safely; "
                "give another --out, or --no-resume to start over"
            )
        return
    try:
        stored = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirectoryError(f"{config_path}: not valid JSON ({e}); give another --out, or --no-resume") from None
    diff = config_differences(_plain(stored), _plain(cfg.to_dict()))
    if diff:
        shown = ", ".join(
            f"{name} ({_lookup(stored, name)!r} stored, {_lookup(cfg.to_dict(), name)!r} requested)"
            for name in diff[:4]
        )
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise RunDirectoryError(
            f"{run_dir}: holds a run of another configuration: {shown}{more}; "
            "give another --out, or --no-resume to start over"
        )


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return _plain(d)


def completed_curve(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run directory's curve when it holds this run finished, else None."""
    path = run_dir / "curve.json"
    if not path.exists():
        return None
    try:
        curve = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(curve, dict) and curve.get("complete") is True and curve.get("run_id") == cfg.run_id:
        return curve
    return None


def _trim_metrics_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a resumed run logs the later steps again); drop a torn last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line)
    text = "".join(line + "\n" for line in kept)
    if text != path.read_text():
        atomic_write_text(path, text)


def _start_over(run_dir: Path) -> None:
    """Remove what a previous run left (its curve, checkpoints and log), so nothing of it mixes with the new run."""
    (run_dir / "curve.json").unlink(missing_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir():
        for p in ckpts.glob("*.pt"):
            if p.name == "last.pt" or (p.name.startswith("step") and p.name[4:-3].isdigit()):
                p.unlink()


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    *,
    device: str | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    command: str | None = None,
    quiet: bool = False,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; resume from ``run_dir/checkpoints/last.pt`` when it exists.

    ``stop_after`` ends the process's work after that many steps (a simulated interruption, for tests).
    ``on_eval`` receives the curve so far (``complete`` false until the last step) after every
    evaluation, so a caller can keep a cut-off run's evidence; it does not change what is computed.
    Returns the curve (also written to ``run_dir/curve.json``).

    A run directory belongs to one configuration: resuming one whose ``config.json`` differs, or one
    that another process is writing, raises :class:`RunDirectoryError`. A finished run is returned as it
    is, never trained further.
    """
    run_dir = Path(run_dir)
    pick_device(device)  # a bad --device fails before anything is written
    check_data_files(cfg)
    if dist_info()[0] != 0:
        return _train(cfg, run_dir, device, resume, stop_after, command, quiet, on_eval)
    with RunLock(run_dir):
        return _train(cfg, run_dir, device, resume, stop_after, command, quiet, on_eval)


def _train(cfg, run_dir, device, resume, stop_after, command, quiet, on_eval) -> dict[str, Any]:
    dev = pick_device(device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # near-zero adaLN gates make denormals; they slow CPUs ~30x
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
    rank, world = setup_distributed(dev)
    tc = cfg.train
    if tc.batch_size % (world * tc.grad_accum):
        raise ValueError(
            f"train.batch_size: {tc.batch_size} is not divisible by world_size x grad_accum = {world} x {tc.grad_accum}"
        )
    micro = tc.batch_size // (world * tc.grad_accum)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = tc.tf32
        torch.backends.cudnn.allow_tf32 = tc.tf32
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if tc.precision == "bf16" and dev.type == "cuda" else nullcontext()
    )

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    curve_path = run_dir / "curve.json"
    if resume:
        check_run_directory(cfg, run_dir)
        done = completed_curve(cfg, run_dir)
        if done is not None:
            if rank == 0 and not quiet:
                print(f"{cfg.run_id}: already complete in {run_dir} ({curve_path} kept as it is)")
            return done
    if rank == 0:
        remove_stale_temporaries(run_dir)
        remove_stale_temporaries(run_dir / "checkpoints")

    torch.manual_seed(cfg.seed)
    model = DiT(cfg.model).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    objective = make_objective(**cfg.objective)
    data = TrainData(cfg)
    val = validation_batch(cfg, data)

    step, seconds, points = 0, 0.0, []
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, dev, required=CHECKPOINT_KEYS)
        if _plain(ck["config"]) != _plain(cfg.model.to_dict()):
            raise CheckpointError(f"{ckpt_path}: its model config differs from config.json's; the file was replaced")
        try:
            model.load_state_dict(ck["model"])
            ema.load_state_dict(ck["ema"])
            opt.load_state_dict(ck["opt"])
            step, seconds, points = int(ck["step"]), float(ck["seconds"]), json.loads(ck["points"])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{ckpt_path}: does not fit this run ({' '.join(str(e).split())[:200]})") from e
        if rank == 0:
            _trim_metrics_log(run_dir / "metrics.jsonl", step)
            if not quiet:
                print(f"{cfg.run_id}: resuming from step {step} of {tc.steps} ({ckpt_path})", flush=True)
    elif rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _start_over(run_dir)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())

    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=cfg.model.stochastic_depth is not None,
        )
    step_macs = train_step_macs(cfg.model, tc.batch_size)
    prov = run_provenance(cfg, dev, world, command)
    log = open(run_dir / "metrics.jsonl", "a") if rank == 0 else None  # noqa: SIM115 - closed below
    model.train()
    started = step
    t_log, img_log = time.perf_counter(), 0
    try:
        while step < tc.steps:
            t0 = time.perf_counter()
            idx = data.batch_indices(step, tc.batch_size)
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=dev)
            for a in range(tc.grad_accum):
                shard = rank * tc.grad_accum + a
                sl = idx[shard * micro : (shard + 1) * micro]
                x, y = data.images[sl].to(dev), data.labels[sl].to(dev)
                g = torch.Generator(device="cpu").manual_seed((cfg.seed * SEED_STRIDE + step) * 4096 + shard)
                sync = ddp.no_sync() if world > 1 and a < tc.grad_accum - 1 else nullcontext()
                with sync, autocast:
                    loss = objective.loss(ddp, x, y, g).mean() / tc.grad_accum
                loss.backward()
                loss_sum += loss.detach()
            if world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_value = float(loss_sum)
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"step {step}: the loss is {loss_value}; training stopped, the last checkpoint "
                    f"({ckpt_path}) holds the last good state"
                )
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            ema_update(ema, model, tc.ema_decay)
            step += 1
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds += time.perf_counter() - t0
            img_log += tc.batch_size

            if rank == 0 and (step % tc.log_every == 0 or step == tc.steps):
                now = time.perf_counter()
                rate = img_log / max(now - t_log, 1e-9)
                log.write(
                    json.dumps({"step": step, "loss": loss_value, "images_per_s": rate, "seconds": seconds}) + "\n"
                )
                log.flush()
                if not quiet:
                    bar = "#" * int(30 * step / tc.steps)
                    print(
                        f"\r[{bar:<30}] {cfg.run_id} step {step}/{tc.steps} loss {loss_value:.4f} {rate:.1f} img/s",
                        end="\n" if step == tc.steps else "",
                        flush=True,
                    )
                t_log, img_log = now, 0

            out_of_time = tc.max_seconds is not None and seconds >= tc.max_seconds
            if tc.max_seconds is not None and world > 1:  # every rank stops at the same step
                flag = torch.tensor(float(out_of_time), device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if out_of_time and step < tc.steps:
                tc.steps = step  # an equal wall-clock budget: this is the run's last step
                if rank == 0 and not quiet:
                    print(f"\n  {cfg.run_id}: training time budget of {tc.max_seconds} s reached at step {step}")
            if tc.is_eval_step(step):
                if rank == 0:
                    ev = evaluate(ema, objective, cfg, dev, val)
                    points.append(
                        {
                            "step": step,
                            "images": step * tc.batch_size,
                            "macs": step * step_macs,
                            "seconds": round(seconds, 3),
                            "device": prov["device"],
                            **ev,
                        }
                    )
                    if not quiet:
                        print(f"\n  eval @ {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in ev.items()), flush=True)
                    if on_eval is not None:
                        on_eval(_curve(cfg, step, step_macs, prov, points, len(data)))
                    model.train()
                if world > 1:
                    dist.barrier()
            if tc.is_ckpt_step(step):
                if rank == 0:
                    extra = {"seconds": seconds, "points": json.dumps(points)}
                    save_checkpoint(ckpt_path, model, ema, opt, step, extra)
                    if tc.keep_checkpoints:
                        save_checkpoint(run_dir / "checkpoints" / f"step{step:07d}.pt", model, ema, opt, step, extra)
                if world > 1:
                    dist.barrier()
            if stop_after is not None and step - started >= stop_after:
                break
    finally:
        if log is not None:
            log.close()

    curve = _curve(cfg, step, step_macs, prov, points, len(data))
    if rank == 0 and step >= tc.steps:
        atomic_write_json(curve_path, curve)
    return curve


def _curve(
    cfg: RunConfig, step: int, step_macs: int, prov: dict[str, Any], points: list[dict], train_size: int
) -> dict[str, Any]:
    return {
        "run_id": cfg.run_id,
        "method": cfg.method,
        "seed": cfg.seed,
        "scale": cfg.scale,
        "complete": step >= cfg.train.steps,
        "train_step_macs": step_macs,
        "train_size": train_size,  # images in the training set: training length in epochs = images / train_size
        "provenance": prov,
        "points": list(points),
    }


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def register_cli(subparsers) -> None:
    from .cli import add_run_args

    p = subparsers.add_parser(
        "train",
        help="train one run of params.yaml (scale x method x seed)",
        description="Train one run. Under torchrun, every process runs this same command.",
    )
    add_run_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the run (initialization, data order, noise)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<scale>/<method>-s<seed>)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps (e.g. a dry run)")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--curve", default=None, help="also write the finished run's curve.json to this path")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    cfg = resolve(load_params(args.params), args.scale, args.method, args.seed)
    if args.steps is not None:
        if isinstance(args.steps, bool) or args.steps < 1:
            raise ConfigError(f"--steps: {args.steps!r} is not allowed; must be a positive integer")
        cfg.train.steps = args.steps
        cfg.validate()
    out = Path(args.out or Path("runs") / args.scale / f"{args.method}-s{args.seed}")
    try:
        curve = train(
            cfg, out, device=args.device, resume=not args.no_resume, command="repro " + " ".join(sys.argv[1:])
        )
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    else:
        if args.curve and curve["complete"] and dist_info()[0] == 0:
            atomic_write_json(args.curve, curve)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
