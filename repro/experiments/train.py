"""The training loop: any model variant x objective x data x scale, on CPU, one GPU, or torchrun + DDP.

Read top to bottom: a :class:`RunState` (model, EMA, optimizer, step, clock, curve) that saves and
loads itself; :func:`train_step`, one optimizer step on given inputs; :func:`fit`, the loop, which runs
the step and then whichever :class:`Hook` is due (logging, the time budget, evaluation, checkpoints);
and :func:`train`, which sets a run up from its configuration and run directory.

A run directory (see :mod:`repro.experiments.rundir`) holds ``config.json``, ``metrics.jsonl`` (one line per logged
step: the mean loss over the steps since the last line, across ranks too), ``checkpoints/last.pt``
(atomic) and ``curve.json``: one point per evaluation with its cost (step, images seen, counted
training MACs, training wall-clock seconds on the named device, evaluation excluded) and its quality
(FID / KID / precision / recall of the EMA weights, and the validation loss at fixed noise levels).

Determinism. The data order is a function of ``(seed, step)``, and the noise, label dropout and
routing of each micro-batch draw from a generator seeded by ``(seed, step, shard)``, where the shard
is ``rank * grad_accum + accumulation index``. They are drawn before the step (so the step itself
draws nothing and can be compiled), in the order the model would draw them. Nothing random is
carried in memory, so a run resumed from a checkpoint ends bitwise identical to an uninterrupted one
on CPU, and one process with ``grad_accum = k`` computes the same gradients as ``k`` DDP processes
with ``grad_accum = 1`` (up to the order of floating-point sums).

Host synchronisation. The step never reads a value back: the loss is summed on the device and read
(and checked for NaN/Inf) only when a hook is due, and always before a checkpoint is written, so the
last checkpoint on disk holds finite weights.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..build import built_regularizer, check_data_files, run_step_macs
from ..config import ConfigError, RunConfig
from ..data.loader import SEED_STRIDE, TrainData, validation_batch
from ..io import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    remove_stale_temporaries,
)
from ..models import DiT
from ..objectives import make_objective
from ..objectives.regularizers import projector_for, regularized_loss
from ..provenance import run_provenance
from ..runtime import cpu_setup, dist_info, pick_device, setup_distributed
from .evaluation import evaluate, extra_fid
from .rundir import RunLock, check_run_directory, completed_curve, plain, start_over, trim_metrics_log

CHECKPOINT_KEYS = ("config", "model", "ema", "opt", "step", "seconds", "points")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


# ------------------------------------------------------------------------------------------
# The run state
# ------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a run carries from step to step; a checkpoint is this, whole."""

    model: DiT
    ema: DiT
    opt: torch.optim.Optimizer
    step: int = 0
    seconds: float = 0.0  # training wall-clock so far (evaluation and checkpoints excluded)
    points: list[dict[str, Any]] = field(default_factory=list)  # the curve: one point per evaluation
    # SRA's projector (trained with the model, not averaged, not used for sampling); None for every other method
    projector: torch.nn.Module | None = None

    @classmethod
    def create(cls, cfg: RunConfig, device: torch.device) -> RunState:
        torch.manual_seed(cfg.seed)
        model = DiT(cfg.model).to(device)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        tc = cfg.train
        # built after the model from a generator of its own: the model's initial weights are those without it
        projector = projector_for(built_regularizer(cfg), cfg.model.hidden_size, cfg.seed)
        params = model.parameters()
        if projector is not None:
            projector = projector.to(device)
            params = [*model.parameters(), *projector.parameters()]
        # foreach: one kernel per op over all tensors (bitwise equal to the per-tensor loop)
        opt = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay, foreach=True)
        return cls(model, ema, opt, projector=projector)

    def save(self, path: Path) -> None:
        atomic_torch_save(
            {
                "config": self.model.config.to_dict(),
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(),
                "step": self.step,
                "seconds": self.seconds,
                "points": json.dumps(self.points),
                **({"projector": self.projector.state_dict()} if self.projector is not None else {}),
            },
            path,
        )

    def load(self, path: Path, device: torch.device) -> None:
        ck = load_checkpoint(path, device, required=CHECKPOINT_KEYS)
        if plain(ck["config"]) != plain(self.model.config.to_dict()):
            raise CheckpointError(f"{path}: its model config differs from config.json's; the file was replaced")
        try:
            self.model.load_state_dict(ck["model"])
            self.ema.load_state_dict(ck["ema"])
            self.opt.load_state_dict(ck["opt"])
            if self.projector is not None:
                self.projector.load_state_dict(ck["projector"])
            self.step, self.seconds, self.points = int(ck["step"]), float(ck["seconds"]), json.loads(ck["points"])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path}: does not fit this run ({' '.join(str(e).split())[:200]})") from e
        check_checkpoint_step(path, ck)


def check_checkpoint_step(path: Path, ck: dict[str, Any]) -> None:
    """Cross-checks a checkpoint's ``step`` against its weights' own record of it: every parameter's optimizer state
    counts the updates the weights have had, and the curve's points were evaluated at or before it. A ``step`` that
    disagrees (a step-6 file relabelled 12) would resume to a "complete" run whose curve never saw those steps."""
    step = ck["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: step={step!r} is not allowed; must be an integer >= 0")
    state = ck["opt"].get("state", {}) if isinstance(ck["opt"], dict) else {}
    updates = sorted({int(s["step"]) for s in state.values() if isinstance(s, dict) and "step" in s}) or [0]
    if updates != [step]:
        shown = updates[0] if len(updates) == 1 else updates
        raise CheckpointError(
            f"{path}: step={step} is not allowed; must be the {shown} update(s) its optimizer state records "
            "(the weights are from another step than the file says)"
        )
    points = json.loads(ck["points"])
    late = [
        p.get("step")
        for p in points
        if isinstance(p, dict) and not (isinstance(p.get("step"), int) and p["step"] <= step)
    ]
    if late:
        raise CheckpointError(f"{path}: points at step(s) {late[:5]} are not allowed; must be at or before step={step}")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, one foreach kernel per op (bitwise the per-tensor update)."""
    e, p = list(ema.parameters()), [q.detach() for q in model.parameters()]
    torch._foreach_mul_(e, decay)
    torch._foreach_add_(e, p, alpha=1 - decay)


# ------------------------------------------------------------------------------------------
# One step
# ------------------------------------------------------------------------------------------


@dataclass
class MicroBatch:
    """One micro-batch with every random choice of its loss already drawn."""

    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    draws: Any  # repro.models.dit.TrainingDraws
    extra: Any = None  # the regularizer's own draws (SRA: the teacher's noise levels); None without one


def draw_micro_batch(objective, model: DiT, x, y, generator: torch.Generator, regularizer=None) -> MicroBatch:
    """The noise level, the noise, then the model's draws (label dropout, routes), in the order
    ``objective.loss(model, x, y, generator)`` draws them, so the loss is bitwise the same; a regularizer's
    draws come after all of them, so they change none of them."""
    t, noise = objective.draw(x, generator)
    b = MicroBatch(x, y, t, noise, model.draw_training(len(x), generator, x.device))
    if regularizer is not None:
        b.extra = regularizer.draw(objective, t, generator)
    return b


def train_step(
    state: RunState,
    net,
    objective,
    batches: Sequence[MicroBatch],
    tc,
    sync=None,
    regularizer=None,
    objective_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimizer step over ``batches`` (the gradient-accumulation micro-batches of this process),
    then the EMA update. ``net`` is the module the loss calls (the model, or its DDP / compiled
    wrapper); ``sync(i)`` the context for micro-batch ``i`` (DDP's ``no_sync`` before the last).
    ``regularizer`` (see :mod:`repro.objectives.regularizers`) adds its term to the loss; None, the objective's
    loss alone, computed exactly as without the option; with one, ``objective_loss`` (a device scalar, when
    given) gets the step's mean objective loss without the term added.
    Returns the step's mean loss (with the regularizer's term) as a device tensor: nothing is read back."""
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if tc.precision == "bf16" and batches[0].x.device.type == "cuda"
        else nullcontext()
    )
    state.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=batches[0].x.device)
    for i, b in enumerate(batches):
        with sync(i) if sync is not None else nullcontext(), autocast:
            call = functools.partial(net, draws=b.draws)
            if regularizer is None:
                loss = objective.loss_at(call, b.x, b.y, b.t, b.noise).mean() / len(batches)
            else:
                base, total_loss = regularized_loss(
                    regularizer, objective, call, b, ema=state.ema, projector=state.projector
                )
                loss = total_loss / len(batches)
                if objective_loss is not None:
                    objective_loss += base.detach() / len(batches)
        loss.backward()
        total += loss.detach()
    if tc.grad_clip is not None:
        params = state.model.parameters()
        if state.projector is not None:
            params = [*params, *state.projector.parameters()]
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    state.opt.step()
    ema_update(state.ema, state.model, tc.ema_decay)
    return total


# ------------------------------------------------------------------------------------------
# Hooks: what runs between steps, each on its own schedule
# ------------------------------------------------------------------------------------------


class Hook:
    """Something done after some steps: ``due(step)`` says after which, ``__call__(run)`` does it.
    Every rank calls every hook (so collectives line up); side effects belong to rank 0."""

    def __init__(self, due: Callable[[int], bool]):
        self.due = due

    def __call__(self, run: Run) -> None:
        raise NotImplementedError


class LossMeter:
    """The training loss summed on the device; read back (all ranks reduced) only when asked.

    :meth:`mean` gives the mean since the last :meth:`reset` (a log line); :meth:`check` only checks the
    steps since the last check (before a checkpoint). Both raise :class:`TrainingDiverged` on NaN/Inf."""

    def __init__(self, device: torch.device, world: int):
        self.world = world
        self.sum, self.steps = torch.zeros((), device=device), 0  # since the last reset
        self.unchecked, self.since = torch.zeros((), device=device), None  # since the last check
        self.last = None  # the last step added

    def add(self, loss: torch.Tensor, step: int) -> None:
        self.sum += loss
        self.unchecked += loss
        self.steps += 1
        self.since = step if self.since is None else self.since
        self.last = step

    def _read(self, total: torch.Tensor) -> float:
        total = total.clone()
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        return float(total)

    def check(self) -> None:
        if self.since is None:
            return
        value = self._read(self.unchecked)
        if not math.isfinite(value):
            steps = f"step {self.since}" if self.since == self.last else f"steps {self.since}-{self.last}"
            raise TrainingDiverged(
                f"{steps} (0-based): the loss is {value}; training stopped, the last checkpoint holds the last "
                "good state"
            )
        self.unchecked.zero_()
        self.since = None

    def mean(self) -> float:
        self.check()
        return self._read(self.sum) / self.steps if self.steps else math.nan

    def reset(self) -> None:
        self.sum.zero_()
        self.steps = 0


class LogHook(Hook):
    """A line of ``metrics.jsonl`` (step, mean loss, images/s of training time, seconds) every ``log_every``
    steps; a tqdm progress bar unless quiet; DVCLive scalars when asked (``live``, needs ``dvclive``)."""

    def __init__(self, run: Run, quiet: bool, live: bool):
        tc = run.cfg.train
        super().__init__(lambda step: step % tc.log_every == 0 or step == tc.steps)
        self.last = (run.state.step, run.state.seconds)
        self.file = open(run.dir / "metrics.jsonl", "a") if run.rank == 0 else None  # noqa: SIM115 - close()
        self.bar = self.live = None
        if run.rank == 0 and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=run.cfg.train.steps, initial=run.state.step, desc=run.cfg.run_id, unit="step")
        if run.rank == 0 and live:
            try:
                from dvclive import Live
            except ImportError:
                raise ConfigError("--live: needs the dvclive package (pip install 'repro[live]')") from None
            # never edits the project's dvc.yaml or makes a DVC experiment: it only writes the run's dvclive/ folder
            self.live = Live(
                str(run.dir / "dvclive"), resume=run.state.step > 0, save_dvc_exp=False, dvcyaml=None, report=None
            )

    def __call__(self, run: Run) -> None:
        loss = run.loss.mean()
        run.loss.reset()
        extra = {}
        meter = getattr(run.step_fn, "objective_meter", None)
        if meter is not None:  # with a regularizer: loss - objective_loss is its weighted term
            extra["objective_loss"] = meter.mean()
            meter.reset()
        step, seconds = run.state.step, run.state.seconds
        rate = (step - self.last[0]) * run.cfg.train.batch_size / max(seconds - self.last[1], 1e-9)
        self.last = (step, seconds)
        if self.file is None:
            return
        line = {"step": step, "loss": loss, **extra, "images_per_s": rate, "seconds": seconds}
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        if self.live is not None:
            self.live.step = step
            for name, value in (("train/loss", loss), ("train/images_per_s", rate)):
                self.live.log_metric(name, value)
            self.live.next_step()

    def close(self) -> None:
        for thing in (self.bar, self.file):
            if thing is not None:
                thing.close()
        if self.live is not None:
            self.live.end()


class BudgetHook(Hook):
    """``train.max_seconds``: the step at which the training time reaches it becomes the run's last (on
    every rank). On CPU it is checked after every step (the clock costs nothing there); on a GPU at the
    log steps, where the loop synchronises anyway."""

    def __init__(self, run: Run):
        every = 1 if run.device.type == "cpu" else run.cfg.train.log_every
        super().__init__(lambda step: step % every == 0)

    def __call__(self, run: Run) -> None:
        tc = run.cfg.train
        out = run.state.seconds >= tc.max_seconds
        if run.world > 1:
            flag = torch.tensor(float(out), device=run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out = bool(flag.item())
        if out and run.state.step < tc.steps:
            run.cfg = run.cfg.with_train(steps=run.state.step)  # an equal wall-clock budget: this is the last step
            run.say(f"{run.cfg.run_id}: training time budget of {tc.max_seconds} s reached at step {run.state.step}")


class EvalHook(Hook):
    """A point of the curve (cost, then the EMA weights' quality) at ``train.eval_every`` and the last step; with
    ``train.to_target``, the point that makes the targets reached ``target_patience`` times in a row is the last."""

    GRID = 100  # final samples in samples.png: 10 rows x 10 columns, a column per class

    def __init__(self, run: Run, on_eval: Callable[[dict], None] | None):
        # reads run.cfg when asked: reaching the targets ends the run early (a new config with fewer steps)
        super().__init__(lambda step: run.cfg.train.is_eval_step(step))
        self.on_eval = on_eval
        self.val = validation_batch(run.cfg, run.data)

    def with_samples(self, run: Run, step: int) -> bool:
        tc, ec = run.cfg.train, run.cfg.eval
        if ec.sample_at is not None:
            return tc.at_dense(step, ec.sample_at)
        return ec.sample_every is None or tc.on_schedule(step, ec.sample_every)

    def __call__(self, run: Run) -> None:
        stop = False
        if run.rank == 0:
            s = run.state
            last = s.step >= run.cfg.train.steps
            keep: dict[str, Any] = {}
            with_samples = self.with_samples(run, s.step)
            ev = evaluate(s.ema, run.objective, run.cfg, run.device, self.val, with_samples, keep)
            point = {
                "step": s.step,
                "images": s.step * run.cfg.train.batch_size,
                "macs": s.step * run.step_macs,
                "seconds": round(s.seconds, 3),
                "device": run.prov["device"],
                **ev,
            }
            stop = not last and run.targets is not None and targets_reached(run, [*s.points, point])
            extra = run.cfg.eval.extra_fid
            if extra and with_samples and run.cfg.seed in extra["seeds"]:
                steps = extra["sample_steps"].get(run.cfg.objective.name)
                if steps and (last or stop or run.cfg.train.at_dense(s.step, extra["at"])):
                    point.update(extra_fid(s.ema, run.objective, run.cfg, run.device, steps))
            if (last or stop) and "samples" in keep and run.cfg.model.in_channels in (1, 3):
                from ..metrics.grid import save_grid

                save_grid(keep["samples"][: self.GRID], run.dir / "samples.png", nrow=run.cfg.model.num_classes)
            s.points.append(point)
            shown = {k: v for k, v in point.items() if k not in ("step", "images", "macs", "seconds", "device")}
            run.say(f"eval @ {s.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items() if k != "fid_blocks"))
        if run.world > 1:
            flag = torch.tensor(float(stop), device=run.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:  # every rank ends here: this step is now the run's last, so the checkpoint hook saves it
            run.cfg = run.cfg.with_train(steps=run.state.step)
            run.say(f"{run.cfg.run_id}: targets reached at {run.cfg.train.target_patience} evaluations in a row")
        if run.rank == 0 and self.on_eval is not None:
            self.on_eval(run.curve())
        if run.world > 1:
            dist.barrier()


def load_targets(path: str | os.PathLike) -> dict[str, Any]:
    """The targets of ``train.to_target``: ``fid`` (a number >= 0) and optionally ``val_loss`` (> 0) with the
    ``objective`` it was measured on, as ``repro targets`` writes them. Errors name the file and the field."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"train.to_target: {path}: cannot be read as JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"train.to_target: {path}: must hold a JSON object")
    fid = doc.get("fid")
    if isinstance(fid, bool) or not isinstance(fid, (int, float)) or not math.isfinite(fid) or fid < 0:
        raise ConfigError(f"train.to_target: {path}: fid={fid!r} is not allowed; must be a finite number >= 0")
    val = doc.get("val_loss")
    if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 < val < math.inf):
        raise ConfigError(f"train.to_target: {path}: val_loss={val!r} is not allowed; must be a finite number > 0")
    if val is not None and not isinstance(doc.get("objective"), str):
        raise ConfigError(f"train.to_target: {path}: a val_loss target needs the 'objective' it was measured on")
    return {"fid": float(fid), "val_loss": None if val is None else float(val), "objective": doc.get("objective")}


def targets_reached(run: Run, points: Sequence[dict[str, Any]]) -> bool:
    """Whether the last ``train.target_patience`` sample-quality points of ``points`` all reach the targets that
    apply to this run (FID; the validation loss only on the targets' objective)."""
    t, need = run.targets, run.cfg.train.target_patience
    same = t["val_loss"] is not None and t["objective"] == run.cfg.objective.name
    sampled = [p for p in points if p.get("fid") is not None]
    if len(sampled) < need:
        return False
    return all(p["fid"] <= t["fid"] and (not same or p["val_loss"] <= t["val_loss"]) for p in sampled[-need:])


class CheckpointHook(Hook):
    """``checkpoints/last.pt`` (and ``stepNNNNNNN.pt`` with ``keep_checkpoints``) at ``train.ckpt_every`` and
    the last step, after checking that the loss since the last check is finite."""

    def __init__(self, run: Run):
        super().__init__(lambda step: run.cfg.train.is_ckpt_step(step))

    def __call__(self, run: Run) -> None:
        run.loss.check()  # raises before a diverged state could be written
        if run.rank == 0:
            run.state.save(run.dir / "checkpoints" / "last.pt")
            if run.cfg.train.keep_checkpoints:
                run.state.save(run.dir / "checkpoints" / f"step{run.state.step:07d}.pt")
        if run.world > 1:
            dist.barrier()


# ------------------------------------------------------------------------------------------
# Preemption: SLURM's SIGTERM / SIGUSR1 end the run at a step boundary, with a checkpoint
# ------------------------------------------------------------------------------------------

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after writing its checkpoint; the same command resumes
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption:
    """SIGTERM and SIGUSR1 (what SLURM sends before it preempts a job or its time runs out, and what torchrun
    forwards to its workers) set a flag; the handler does nothing else (it never raises, so it cannot land in the
    middle of a collective or a file write). After each step :meth:`stop_now` says whether to stop: on one process,
    the flag itself; on several, every rank's flag reduced with MAX, so all ranks stop after the same step even when
    the signal reaches them at different times. The reduction is launched after step ``s`` on a gloo group (no GPU
    synchronisation) and read after step ``s + 1``, overlapping a step, so ranks stop one step after the first of
    them saw the signal."""

    def __init__(self, world: int, device: torch.device):
        self.world, self.flag, self.signal = world, False, None
        self.group = None
        if world > 1:
            self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        self._pending: tuple[Any, torch.Tensor] | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        self.flag = True
        self.signal = self.signal or signum

    def install(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def stop_now(self) -> bool:
        if self.world == 1:
            return self.flag
        decided = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            decided = bool(flag.item())
            if decided and self.signal is None:
                self.signal = int(flag.item())
        flag = torch.tensor([(self.signal or 1) if self.flag else 0], dtype=torch.int64)
        self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return decided

    def finish(self) -> None:
        """Wait for the reduction in flight (every rank launched one after its last step)."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None


def check_shared_directory(run_dir: Path, rank: int, world: int) -> int:
    """Every rank reads and writes one shared run directory: rank 0 writes a fresh token into ``run_dir/.ranks``
    and every rank reads it back. A rank that does not see it (its node has another directory under that path: no
    shared file system) is named in an error raised on every rank, before anything is read or trained. Returns the
    number of distinct hosts."""
    import secrets
    import socket

    from .rundir import RunDirectoryError

    if world == 1:
        return 1
    host = socket.gethostname()
    box = [secrets.token_hex(16) if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if rank == 0:
        atomic_write_json(run_dir / RANKS_FILE, {"token": box[0], "world_size": world, "host": host})
    dist.barrier()
    try:
        seen = json.loads((run_dir / RANKS_FILE).read_text()).get("token") == box[0]
    except (OSError, ValueError):
        seen = False
    reports: list[Any] = [None] * world
    dist.all_gather_object(reports, {"rank": rank, "host": host, "sees_rank0": seen})
    blind = [r for r in reports if not r["sees_rank0"]]
    if blind:
        who = ", ".join(f"rank {r['rank']} on {r['host']}" for r in blind[:8])
        raise RunDirectoryError(
            f"{run_dir}: {len(blind)} of {world} ranks do not see rank 0's run directory ({who}); every node must "
            "read and write one shared directory (a shared file system), or their checkpoints diverge"
        )
    return len({r["host"] for r in reports})


def agree_on_step(run_dir: Path, step: int, rank: int, world: int) -> None:
    """Every rank resumes from the same step: the steps the ranks read from their checkpoint are gathered, and a
    disagreement is an error on every rank, before any step (before: node 0 resumed at step 40, node 1 started at
    0, and the run crashed later but still wrote ``complete: true``)."""
    from .rundir import RunDirectoryError

    if world == 1:
        return
    steps: list[Any] = [None] * world
    dist.all_gather_object(steps, step)
    if len(set(steps)) > 1:
        by_step = {st: [r for r in range(world) if steps[r] == st] for st in sorted(set(steps))}
        shown = "; ".join(f"step {st}: ranks {_ranges(ranks)}" for st, ranks in by_step.items())
        raise RunDirectoryError(
            f"{run_dir}: the ranks read different checkpoints ({shown}); every rank must resume from the same "
            "checkpoint of one shared run directory"
        )


def _ranges(ranks: Sequence[int]) -> str:
    out, start = [], None
    for i, r in enumerate(ranks):
        start = r if start is None else start
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ", ".join(out)


RANKS_FILE = ".ranks"


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run being trained: its configuration, directory, state, and what the step and hooks share."""

    cfg: RunConfig
    dir: Path
    device: torch.device
    rank: int
    world: int
    state: RunState
    objective: Any
    data: TrainData
    step_fn: Callable[[int], torch.Tensor]  # step index -> that step's loss (a device tensor)
    step_macs: int
    prov: dict[str, Any]
    loss: LossMeter
    quiet: bool = False
    targets: dict[str, Any] | None = None  # train.to_target's, read once at the start

    def say(self, text: str) -> None:
        if self.rank == 0 and not self.quiet:
            from tqdm import tqdm

            tqdm.write(f"  {text}")  # above the progress bar, which stays at the bottom

    def curve(self) -> dict[str, Any]:
        return {
            "run_id": self.cfg.run_id,
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "scale": self.cfg.scale,
            "complete": self.state.step >= self.cfg.train.steps,
            "train_step_macs": self.step_macs,
            "train_size": len(self.data),  # images in the training set: epochs = images / train_size
            "provenance": self.prov,
            "points": list(self.state.points),
            **({"targets": {**self.targets, "file": self.cfg.train.to_target}} if self.targets is not None else {}),
        }


def fit(
    run: Run, hooks: Sequence[Hook], stop_after: int | None = None, preemption: Preemption | None = None
) -> int | None:
    """Step until ``train.steps`` (or ``stop_after`` more steps); after each step run the hooks that are due.
    The clock counts the steps only: it is read (with a device synchronisation) where a hook is due,
    and restarted after the hooks, so evaluation and checkpoints never count as training time.

    With ``preemption``, a stop signal ends the loop at a step boundary that every rank agrees on (see
    :class:`Preemption`); the signal's number is returned (None when the loop ran to its end)."""
    s, sync = run.state, torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)
    started, t0 = s.step, time.perf_counter()
    while s.step < run.cfg.train.steps:
        run.loss.add(run.step_fn(s.step), s.step)
        s.step += 1
        if any(hook.due(s.step) for hook in hooks):
            sync()
            s.seconds += time.perf_counter() - t0
            for hook in hooks:  # asked in turn: the budget hook may make this the last step, and so an eval step
                if hook.due(s.step):
                    hook(run)
            t0 = time.perf_counter()
        if preemption is not None and s.step < run.cfg.train.steps and preemption.stop_now():
            sync()
            s.seconds += time.perf_counter() - t0
            return preemption.signal
        if stop_after is not None and s.step - started >= stop_after:
            break
    return None


def make_step_fn(
    run_cfg: RunConfig, state: RunState, objective, data: TrainData, device, rank: int, world: int, compile: bool
) -> Callable[[int], torch.Tensor]:
    """``step -> loss`` for this process: its micro-batches of the step's global batch, their draws, and
    :func:`train_step` through DDP when ``world > 1`` and ``torch.compile`` when ``compile``."""
    tc = run_cfg.train
    micro = tc.batch_size // (world * tc.grad_accum)
    regularizer = built_regularizer(run_cfg)
    if state.projector is not None and world > 1:
        raise ConfigError(
            f"regularizer: {run_cfg.regularizer['name']!r} trains a projector outside DDP; allowed: one process"
        )
    if regularizer is not None and micro < 2 and regularizer.name == "dispersive":
        raise ConfigError(f"regularizer: the dispersive loss needs >= 2 samples a process's micro-batch, not {micro}")
    net = state.model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            state.model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=run_cfg.model.stochastic_depth is not None,
        )
    ddp = net
    if compile:
        # inductor's on-disk caches make a later run of the same shapes skip most of the compile cost
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "repro" / "inductor"))
        net = torch.compile(net)

    def sync(i: int):
        return ddp.no_sync() if world > 1 and i < tc.grad_accum - 1 else nullcontext()

    def step_fn(step: int) -> torch.Tensor:
        idx = data.batch_indices(step, tc.batch_size)
        batches = []
        for a in range(tc.grad_accum):
            shard = rank * tc.grad_accum + a
            sl = idx[shard * micro : (shard + 1) * micro]
            g = torch.Generator(device="cpu").manual_seed((run_cfg.seed * SEED_STRIDE + step) * 4096 + shard)
            x, y = data.images[sl].to(device), data.labels[sl].to(device)
            batches.append(draw_micro_batch(objective, state.model, x, y, g, regularizer))
        if regularizer is None:
            return train_step(state, net, objective, batches, tc, sync)
        base = torch.zeros((), device=device)
        total = train_step(state, net, objective, batches, tc, sync, regularizer, base)
        step_fn.objective_meter.add(base, step)
        return total

    if regularizer is not None:  # the objective's loss alone, logged beside the total (LogHook)
        step_fn.objective_meter = LossMeter(device, world)
    return step_fn


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
    compile: bool = False,
    live: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; resume from ``run_dir/checkpoints/last.pt`` when it exists.

    ``stop_after`` ends the process's work after that many steps (a simulated interruption, for tests).
    ``on_eval`` receives the curve so far (``complete`` false until the last step) after every
    evaluation, so a caller can keep a cut-off run's evidence; it does not change what is computed.
    ``compile`` runs the step's forward and backward through ``torch.compile`` (same draws; results equal
    up to float rounding; recorded in the provenance). ``live`` also logs DVCLive scalars. Returns the
    curve (also written to ``run_dir/curve.json``).

    A run directory belongs to one configuration: resuming one whose ``config.json`` differs, or one
    that another process is writing, raises :class:`~repro.experiments.rundir.RunDirectoryError`. A finished run is
    returned as it is, never trained further.
    """
    run_dir = Path(run_dir)
    pick_device(device)  # a bad --device fails before anything is written
    check_data_files(cfg)
    if cfg.data.name == "latents":  # a held-out validation set large enough, before anything is written
        from ..data.latents import LatentShards

        LatentShards(cfg.data.path).validation(cfg.eval.val_size)
    with RunLock(run_dir) if dist_info()[0] == 0 else nullcontext() as lock:
        if lock is not None and lock.previous and not quiet:
            print(
                f"{cfg.run_id}: {run_dir} was last written by pid {lock.previous}, which ended without releasing it "
                "(killed?); this run takes it over",
                file=sys.stderr,
            )
        return _train(cfg, run_dir, device, resume, stop_after, command, quiet, on_eval, compile, live)


def _train(cfg, run_dir, device, resume, stop_after, command, quiet, on_eval, compile, live) -> dict[str, Any]:
    dev = pick_device(device)
    cpu_setup(dev, cfg.train.threads)
    rank, world = setup_distributed(dev)
    tc = cfg.train
    if tc.batch_size % (world * tc.grad_accum):
        raise ValueError(
            f"train.batch_size: {tc.batch_size} is not divisible by world_size x grad_accum = {world} x {tc.grad_accum}"
        )
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = tc.tf32
        torch.backends.cudnn.allow_tf32 = tc.tf32
    hosts = check_shared_directory(run_dir, rank, world)

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume:
        check_run_directory(cfg, run_dir)
        done = completed_curve(cfg, run_dir)
        if done is not None:
            if rank == 0 and not quiet:
                print(f"{cfg.run_id}: already complete in {run_dir} ({run_dir / 'curve.json'} kept as it is)")
            return done
    if rank == 0:
        remove_stale_temporaries(run_dir)
        remove_stale_temporaries(run_dir / "checkpoints")

    state = RunState.create(cfg, dev)
    objective = make_objective(**cfg.objective)
    data = TrainData(cfg)
    if resume and ckpt_path.exists():
        state.load(ckpt_path, dev)
        if rank == 0:
            trim_metrics_log(run_dir / "metrics.jsonl", state.step)
            if not quiet:
                print(f"{cfg.run_id}: resuming from step {state.step} of {tc.steps} ({ckpt_path})", flush=True)
    elif rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        start_over(run_dir)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
    agree_on_step(run_dir, state.step, rank, world)

    step_fn = make_step_fn(cfg, state, objective, data, dev, rank, world, compile)
    step_macs, prov = run_step_macs(cfg), run_provenance(cfg, dev, world, command)
    prov["compiled"] = bool(compile)
    if dev.type == "cuda":
        prov.update(cuda=torch.version.cuda, gpu_count=world)
    if world > 1:
        prov["nodes"] = hosts
    if cfg.data.name == "latents":
        from ..data.latents import manifest_sha256

        prov["latents"] = {"path": cfg.data.path, "manifest_sha256": manifest_sha256(cfg.data.path)}
    run = Run(cfg, run_dir, dev, rank, world, state, objective, data, step_fn, step_macs, prov, LossMeter(dev, world))
    run.quiet = quiet
    if tc.to_target is not None:
        run.targets = load_targets(tc.to_target)
        if targets_reached(run, state.points):  # stopped there before a kill left curve.json unwritten
            run.cfg = run.cfg.with_train(steps=state.step)
    log = LogHook(run, quiet, live)
    hooks = [log]
    if tc.max_seconds is not None:
        hooks.append(BudgetHook(run))
    hooks += [EvalHook(run, on_eval), CheckpointHook(run)]
    state.model.train()
    preemption = Preemption(world, dev).install()
    try:
        stopped = fit(run, hooks, stop_after, preemption)
        preemption.finish()
        if stopped is not None:  # a step boundary every rank agreed on: checkpoint it, then end cleanly
            run.loss.check()
            if rank == 0:
                state.save(ckpt_path)
            if world > 1:
                dist.barrier()
    finally:
        preemption.restore()
        log.close()
    curve = run.curve()
    if stopped is not None:
        curve["stopped_by"] = signal.Signals(stopped).name if stopped in set(STOP_SIGNALS) else str(stopped)
        curve["stopped_at"] = state.step
        run.say(f"{cfg.run_id}: {curve['stopped_by']} at step {state.step}: checkpoint written to {ckpt_path}")
        return curve
    if world > 1:
        dist.barrier()  # every rank reached the end before the curve says the run is complete
    if rank == 0 and curve["complete"]:
        atomic_write_json(run_dir / "curve.json", curve)
    return curve
