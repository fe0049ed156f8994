"""A scale's training campaign through DVC, in pieces: the training stages that are not up to date, side by side.

``dvc repro`` runs stages one at a time. A campaign of CPU runs goes faster with its independent runs side by
side, each with fewer threads (the scale's ``train.threads`` fixes the thread count, so a run's numbers do not
depend on how it is scheduled). This runner asks DVC which ``train`` stages are not up to date, runs each one's
own command (the one in ``dvc.yaml``), ``jobs`` at a time, in seed-major order (seed 0 of every method first,
so a cut-short campaign is balanced across methods), and records each finished run with ``dvc commit`` so that
``dvc.lock`` marks it done. A stage's outputs are committed files (its curve and sample grid), so a fresh clone
with an empty DVC cache sees the finished runs as up to date and a later piece starts where this one stopped.

``hours`` bounds a piece: a run is started only when the time used so far plus the longest run seen so far
fits. A run longer than a piece (a stage whose command resumes, without ``--no-resume``: the long-horizon scale)
is started whatever its length and, when the piece's time is up, sent SIGTERM: it checkpoints at the next step
and exits with status 75, and the next piece resumes it from that checkpoint. Each pause leaves a record in git
(:mod:`repro.experiments.pieces`) and the run's resume state both in the machine's store outside the work tree and,
compressed, in ``goldens/resume/`` (:mod:`repro.experiments.resume`), so that a piece on the same machine with its
work tree laid anew, or on a fresh machine, resumes the run where it paused; without any state it starts over and,
being seeded, repeats the same curve, which is compared with the records. A stage whose dependencies include a
file that does not exist yet (the targets a run trained to target stops at, written once the baseline's runs are
done) waits: whenever a run ends, the campaign makes what a waiting stage lacks if it can (``dvc repro
--single-item`` of the stage writing the file, once that stage's own inputs exist) and starts the stage in the next
free slot, so the long horizon's runs to target start beside the baseline's last run. Afterwards the stages that
read the curves (speedups, ledger, summary) are re-run. Commit the piece to git (``dvc.lock``, ``goldens/``,
``reports/``) before the next one. Do not edit the code a run depends on while a piece runs: ``dvc commit``
records the dependencies as they are when the run ends.

A run that diverges (``repro train`` exits 3 when its loss turns NaN/Inf) writes no curve, so DVC would see it
as pending in every later piece and re-run it, to diverge again at the same step (a run is seeded). The runner
records it instead, as ``goldens/diverged/<stage>.json`` (command, exit status, minutes, the log's last lines),
committed with the piece; later pieces skip a recorded stage and say so. Delete the record to retry the run (after
a fix), or pass ``everything`` (``--all``), which runs every stage afresh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..evidence.goldens import DIVERGED as DIVERGED_DIR
from ..evidence.goldens import SCALE_ARG
from ..io import atomic_write_json
from . import pieces, resume

TRAIN_PREFIX = "train"
"""dvc.yaml's training stages are the matrix stages named ``train...`` (one stage per run): ``train``,
``train-extra`` (a scale's ``extra_seeds``), ``train-long`` and ``train-long-to-target``; a scale's are those whose
command says ``--scale <scale>``."""
DIVERGED_RC = 3
"""``repro train``'s exit status for a run whose loss turned NaN/Inf."""
PREEMPTED_RC = 75
"""``repro train``'s exit status after SIGTERM/SIGUSR1: it wrote its checkpoint; the same command resumes."""
DIVERGED = Path("goldens") / DIVERGED_DIR
"""Where the runner records diverged runs (relative to the project root; committed with the piece): the folder the
ledger reads them from (:mod:`repro.evidence.goldens`), named once."""


def diverged_record(root: Path, stage: Stage) -> Path:
    """The record of ``stage`` having diverged in an earlier piece (it may not exist)."""
    return root / DIVERGED / f"{stage.name}.json"


def record_divergence(root: Path, stage: Stage, rc: int, seconds: float, log_tail: list[str]) -> Path:
    """Write the record of ``stage`` having diverged (the ledger reads it: :func:`repro.evidence.goldens.
    diverged_runs`); its path."""
    record = diverged_record(root, stage)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        record,
        {
            "stage": stage.name,
            "command": stage.cmd,
            "exit_status": rc,
            "minutes": round(seconds / 60, 2),
            "ended_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "log_tail": log_tail,
        },
    )
    return record


def _log_tail(path: Path, lines: int = 20) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


_NAME = re.compile(r"^(?P<base>[\w-]+?)@(?P<method>[a-z0-9][a-z0-9.-]*)-(?P<seed>\d+)$")


@dataclass(frozen=True)
class Stage:
    name: str  # train@<method>-<seed>
    method: str
    seed: int
    cmd: str
    waits_for: tuple[str, ...] = ()  # dependencies that do not exist yet
    unlocked: bool = False  # its outputs exist but dvc.lock has no entry for it (a truncated or lost dvc.lock)
    up_to_date: bool = False  # DVC sees it as done (listed by pending(everything=True) only)

    @property
    def resumable(self) -> bool:
        """A run that resumes across pieces: its command does not start over."""
        return "--no-resume" not in shlex.split(self.cmd)


def parse_stage_name(name: str) -> tuple[str, int]:
    """``train@stochastic-depth-2`` -> ``("stochastic-depth", 2)``."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"stage {name!r}: not a matrix stage name <stage>@<method>-<seed>")
    return m["method"], int(m["seed"])


def seed_major(stages: list[Stage], methods: list[str]) -> list[Stage]:
    """Seed 0 of every method (in ``methods``' order), then seed 1, ...: a campaign cut short stays balanced."""
    rank = {m: i for i, m in enumerate(methods)}
    return sorted(stages, key=lambda s: (s.seed, rank.get(s.method, len(rank)), s.method))


def _dvc(root: Path, *args: str) -> str:
    out = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
        )
    return out.stdout


def pending(root: Path, everything: bool = False, scale: str | None = None) -> list[Stage]:
    """The training stages (of ``scale``, when given) DVC does not see as up to date (a dependency or output
    changed or is missing); ``everything``: all of them."""
    import yaml
    from dvc.repo import Repo

    defined = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    names = [name for name in defined if name.startswith(TRAIN_PREFIX) and "matrix" in defined[name]]
    if not names:
        raise ValueError(f"{root / 'dvc.yaml'}: no training stage ({TRAIN_PREFIX}...) to run")
    locked = _locked_stages(root)
    stages = []
    with Repo(str(root)) as repo:
        collected = [
            stage
            for group in names
            for stage in repo.stage.collect(f"{root / 'dvc.yaml'}:{group}")  # a bare name resolves against the cwd
            if scale is None or _stage_scale(stage.cmd) == scale
        ]
        if not collected:
            return []
        stale = set(json.loads(_dvc(root, "status", "--json", *(s.name for s in collected)) or "{}"))
        for stage in collected:
            if everything or stage.name in stale:
                method, seed = parse_stage_name(stage.name)
                missing = tuple(str(d.def_path) for d in stage.deps if not (root / str(d.def_path)).exists())
                made = bool(stage.outs) and all((root / str(o.def_path)).exists() for o in stage.outs)
                unlocked = made and stage.name not in locked
                stages.append(Stage(stage.name, method, seed, stage.cmd, missing, unlocked, stage.name not in stale))
    return stages


def _locked_stages(root: Path) -> set[str]:
    """The stage names ``dvc.lock`` records (none when there is no lock yet); a lock that is not valid YAML or not
    a mapping of stages is a one-line error naming it, not every run listed as out of date."""
    from ..io import read_yaml

    path = root / "dvc.lock"
    if not path.exists():
        return set()
    lock = read_yaml(path)
    if lock is None:
        return set()
    if not isinstance(lock, dict) or not isinstance(lock.get("stages", {}), dict):
        raise ValueError(f"{path}: not a DVC lock file (a mapping with 'stages'); restore it: git checkout {path.name}")
    return set(lock.get("stages") or {})


def _stage_scale(cmd: str) -> str | None:
    m = SCALE_ARG.search(cmd)
    return m["scale"] if m else None


def may_start(stage: Stage, elapsed: float, longest: float, hours: float | None) -> bool:
    """Whether ``stage`` may start ``elapsed`` seconds into a piece of ``hours``: a run that resumes across pieces
    whenever time is left (it is stopped at the end and resumed in the next), any other only when it fits."""
    if hours is not None and stage.resumable:
        return elapsed < hours * 3600.0
    return plan_fits(elapsed, longest, hours)


def plan_fits(elapsed: float, longest: float, hours: float | None) -> bool:
    """Whether a run that may take ``longest`` seconds (the longest so far; 0 before any has ended), started
    ``elapsed`` seconds into the piece, ends within its ``hours``."""
    return hours is None or (elapsed + longest <= hours * 3600.0 if longest > 0 else elapsed < hours * 3600.0)


MIN_COMMIT_SECONDS = 1800.0
"""A paused run's resume state goes into git (26 MB at micro) only after this much training since its committed
state; a shorter stretch stays in the machine's store and in runs/ (a fresh machine re-makes it)."""


def run_campaign(
    root: Path,
    methods: list[str],
    jobs: int,
    hours: float | None,
    dry_run: bool = False,
    log=print,
    everything: bool = False,
    only: list[str] | None = None,
    scale: str | None = None,
    min_commit_seconds: float = MIN_COMMIT_SECONDS,
) -> dict[str, str]:
    """Run the pending training stages (of ``scale`` when given; ``everything``: all; ``only``: of those methods
    only), ``jobs`` at a time; ``{stage: "done" | "paused (...)" | "failed (rc N)" | "not started" | ...}``. A run
    paused at the deadline has its resume state committed after ``min_commit_seconds`` of training since its
    committed one (:func:`save_state`)."""
    if not min_commit_seconds >= 0:
        raise ValueError(f"min_commit_seconds: {min_commit_seconds} is not allowed; must be >= 0 (seconds)")
    todo = seed_major(pending(root, everything, scale), methods)
    what = "to run" if everything else "not up to date"
    if only is not None:
        left = [s for s in todo if s.method not in only]
        todo = [s for s in todo if s.method in only]
        what += f" of {', '.join(only)}"
        if left:
            log(f"{len(left)} training stage(s) of other methods left for later (--methods)")
    log(f"{len(todo)} training stage(s) {what}: " + (", ".join(s.name for s in todo) or "none"))
    unlocked = [s.name for s in todo if s.unlocked]
    if unlocked:
        log(
            f"warning: {len(unlocked)} of them have their outputs but no entry in dvc.lock ({', '.join(unlocked)}): "
            "dvc.lock may be truncated or from another branch; check `git diff dvc.lock` before re-running them"
        )
    result: dict[str, str] = {}
    if not everything:
        skipped = [s for s in todo if diverged_record(root, s).exists()]
        if skipped:
            log(
                f"{len(skipped)} of them diverged in an earlier piece and are skipped: "
                + ", ".join(s.name for s in skipped)
                + f" (records in {DIVERGED}/; delete one to retry its run)"
            )
            result.update({s.name: "diverged earlier (skipped)" for s in skipped})
            todo = [s for s in todo if s not in skipped]
    if not dry_run:
        todo = make_waited_inputs(root, todo, log)
    waiting = [s for s in todo if s.waits_for]
    if waiting:
        log(
            f"{len(waiting)} of them wait for a dependency not made yet and are not started: "
            + ", ".join(f"{s.name} ({', '.join(s.waits_for)})" for s in waiting)
        )
        result.update({s.name: f"waiting for {', '.join(s.waits_for)}" for s in waiting})
        todo = [s for s in todo if not s.waits_for]
    if dry_run or not todo:
        return result | {s.name: "not started" for s in todo}
    logs = root / "runs" / "campaign-logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: list[tuple[Stage, subprocess.Popen, float]] = []
    try:
        return _run_pieces(root, todo, jobs, hours, log, logs, running, result, waiting, min_commit_seconds)
    finally:  # an error or Ctrl-C here: no run goes on without the campaign that watches it
        _stop_children(running, log)


def _run_pieces(
    root, todo, jobs, hours, log, logs, running, result, waiting=(), min_commit_seconds=0.0
) -> dict[str, str]:
    start, longest = time.monotonic(), 0.0
    queue, waiting = list(todo), list(waiting)
    stopping = False
    while queue or running:
        elapsed = time.monotonic() - start
        if hours is not None and elapsed >= hours * 3600.0 and not stopping:
            resumable = [(st, pr) for st, pr, _ in running if st.resumable]
            if resumable:
                names = ", ".join(st.name for st, _ in resumable)
                log(f"the piece's {hours} h are up: SIGTERM to {names} (they resume in the next piece)")
            for _, proc in resumable:
                proc.send_signal(signal.SIGTERM)
            stopping = True
        while queue and not stopping and len(running) < jobs and may_start(queue[0], elapsed, longest, hours):
            stage = queue.pop(0)
            log(f"start {stage.name}: {stage.cmd}")
            if stage.resumable and not _restore_state(root, stage, log):
                _say_lost_checkpoint(root, stage, log)
            with _stage_log(logs, stage).open("w") as logfile:  # the child keeps its copy
                proc = subprocess.Popen(
                    shlex.split(stage.cmd),
                    cwd=root,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_dies_with(os.getpid()),
                )
            running.append((stage, proc, time.monotonic()))
        if not running:  # the next run would not fit the piece
            break
        time.sleep(2.0)
        ended_well = False
        for item in list(running):
            stage, proc, t0 = item
            rc = proc.poll()
            if rc is None:
                continue
            running.remove(item)
            took = time.monotonic() - t0
            longest = max(longest, took)
            if rc == PREEMPTED_RC and stage.resumable:
                result[stage.name] = f"paused after {took / 60:.1f} min (checkpointed; the next piece resumes it)"
                log(f"paused {stage.name} after {took / 60:.1f} min: its checkpoint is in runs/ for the next piece")
                _record_pause(root, stage, log, min_commit_seconds)
            elif rc == 0:
                _dvc(root, "commit", "--force", stage.name)  # dvc.lock now marks the run done
                if stage.resumable:
                    _check_finished(root, stage, log)
                    _drop_state(root, stage, log)
                diverged_record(root, stage).unlink(missing_ok=True)  # a rerun (--all, after a fix) ended well
                result[stage.name] = "done"
                ended_well = True
                log(f"done  {stage.name} in {took / 60:.1f} min (dvc commit {stage.name})")
            elif rc == DIVERGED_RC:
                record = record_divergence(root, stage, rc, took, _log_tail(_stage_log(logs, stage)))
                result[stage.name] = f"failed (rc {rc}: diverged, recorded in {record.relative_to(root)})"
                log(f"DIVERGED {stage.name} after {took / 60:.1f} min: recorded in {record.relative_to(root)}")
            else:
                result[stage.name] = f"failed (rc {rc})"
                log(f"FAILED {stage.name} (rc {rc}) after {took / 60:.1f} min: see runs/campaign-logs/")
        if ended_well and waiting and not stopping:  # a run's curve may be what a waiting stage's input is made of
            waiting = make_waited_inputs(root, waiting, log)
            ready = [s for s in waiting if not s.waits_for]
            if ready:
                log(f"{len(ready)} waiting stage(s) may start now: {', '.join(s.name for s in ready)}")
                queue += ready
                waiting = [s for s in waiting if s.waits_for]
                for s in ready:
                    del result[s.name]
    for stage in queue:
        result[stage.name] = "not started"
    if queue:
        log(f"{len(queue)} stage(s) left for the next piece (the next would not fit in {hours} h)")
    return result


def _other_stages(root: Path) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """``(name, deps, outs)`` of dvc.yaml's stages with a command, other than training stages, read from the
    pipeline DVC expands (``foreach`` and ``matrix`` included), in dvc.yaml's order."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [
            (st.name, tuple(str(d.def_path) for d in st.deps), tuple(str(o.def_path) for o in st.outs))
            for st in repo.index.stages
            if getattr(st, "cmd", None) and not st.name.startswith(TRAIN_PREFIX)
        ]


def producers(root: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{output path: (stage name, its deps)}`` over the stages other than training stages."""
    return {out: (name, deps) for name, deps, outs in _other_stages(root) for out in outs}


def make_waited_inputs(root: Path, stages: list[Stage], log=print) -> list[Stage]:
    """``stages`` with what they wait for made where it can be: each missing dependency's producing stage
    (:func:`producers`) whose own inputs all exist is run alone (``dvc repro --single-item``); each stage's
    ``waits_for`` is then what is still missing. A producer that fails is said, not fatal: runs may be in flight,
    and its stages go on waiting."""
    missing = list(dict.fromkeys(d for s in stages for d in s.waits_for))
    if not missing:
        return stages
    made = producers(root)
    for name, deps in dict.fromkeys(made[d] for d in missing if d in made):
        if _absent(root, deps):
            continue
        log(f"dvc repro --single-item {name} (its inputs are made; stages wait for its outputs)")
        rc, tail = _repro_single(root, name, capture=True)
        if rc != 0:
            log(f"warning: dvc repro --single-item {name} failed ({rc}): {' / '.join(tail)}")
    return [
        replace(s, waits_for=tuple(d for d in s.waits_for if not (root / d).exists())) if s.waits_for else s
        for s in stages
    ]


def keep_paused_states(root: Path, scale: str, log=print) -> int:
    """The resume states of ``scale``'s paused runs (a checkpoint in runs/ that a committed pause record names),
    for runs paused by a piece that did not keep them; how many were kept."""
    from ..provenance import sha256_file

    kept = 0
    for stage in pending(root, False, scale):
        files = pieces.run_files(stage.cmd)
        ckpt = None if files is None else root / files[0] / resume.CHECKPOINT
        if not stage.resumable or ckpt is None or not ckpt.is_file():
            continue
        recorded = {rec.get("checkpoint_sha256") for _, rec in pieces.records_of(root, stage.cmd)}
        if sha256_file(ckpt) not in recorded:
            log(f"{stage.name}: its checkpoint in {files[0]} has no pause record (write one first); not kept")
            continue
        kept += save_state(root, stage.name, stage.cmd, log)
    return kept


def _say_lost_checkpoint(root: Path, stage: Stage, log) -> None:
    """A resumable run about to start without its checkpoint although earlier pieces recorded it (a fresh
    machine): say that it starts over and what its re-made curve will be held against."""
    files = pieces.run_files(stage.cmd)
    records = pieces.records_of(root, stage.cmd)
    if files is None or not records or (root / files[0] / "checkpoints" / "last.pt").exists():
        return
    steps = ", ".join(str(rec.get("step")) for _, rec in records)
    log(
        f"{stage.name}: no checkpoint in {files[0]} although earlier pieces paused it (at step {steps}): the run "
        "starts over, and its curve is compared with those records when it pauses or ends"
    )


def _record_pause(root: Path, stage: Stage, log, min_commit_seconds: float = 0.0) -> None:
    """After a pause: the run's record in git (:mod:`repro.experiments.pieces`) and what its curve so far repeats
    of the earlier ones. A record that cannot be written is said, not fatal: the checkpoint is what resumes."""
    try:
        path = pieces.write_record(root, stage.name, stage.cmd)
        if path is None:
            return
        log(f"recorded {stage.name} at its checkpoint: {path.relative_to(root)}")
        points = json.loads(path.read_text())["points"]
        for line in pieces.check_repeats(root, stage.cmd, points, skip=path):
            log(f"  repeats {line}")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log(f"warning: {stage.name}: no record of the pause ({type(e).__name__}: {e})")
        return
    save_state(root, stage.name, stage.cmd, log, min_commit_seconds)


def save_state(root: Path, name: str, cmd: str, log, min_commit_seconds: float = 0.0) -> bool:
    """A paused run's resume state into the machine's store and goldens/resume/ (:mod:`repro.experiments.resume`),
    after its record; the git copy only after ``min_commit_seconds`` of training since the committed one. A state
    that cannot be written is said, not fatal (the checkpoint in runs/ still resumes). Whether it was kept."""
    try:
        manifest = resume.save(root, cmd, min_commit_seconds=min_commit_seconds)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log(f"warning: {name}: its resume state was not kept ({type(e).__name__}: {e})")
        return False
    if manifest is None:
        return False
    if "trained_since_committed" in manifest:
        log(
            f"kept {name}'s resume state at step {manifest['step']} in {resume.store_path(cmd)} only: "
            f"{manifest['trained_since_committed'] / 60:.0f} minutes of training since its committed state (git keeps "
            f"one after {min_commit_seconds / 60:.0f}; a fresh machine re-makes those steps)"
        )
        return True
    where = resume.committed_paths(root, cmd)[0].relative_to(root)  # type: ignore[index]
    log(
        f"kept {name}'s resume state at step {manifest['step']}: {where} "
        f"({manifest['archive_bytes'] / 1e6:.1f} MB, commit it with the piece) and {resume.store_path(cmd)}"
    )
    return True


def _restore_state(root: Path, stage: Stage, log) -> bool:
    """Before a resumable run starts without its checkpoint: the newest kept state a pause record names."""
    try:
        restored = resume.restore(root, stage.cmd, warn=lambda line: log(f"warning: {stage.name}: {line}"))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log(f"warning: {stage.name}: its resume states were not read ({type(e).__name__}: {e})")
        return False
    if restored is None:
        return False
    where = "git (a fresh machine)" if restored.committed else "this machine's store"
    log(f"{stage.name}: restored its checkpoint at step {restored.step} from {where}, {restored.source}; it resumes")
    return True


def _drop_state(root: Path, stage: Stage, log) -> None:
    try:
        removed = resume.drop(root, stage.cmd)
    except OSError as e:  # the run is done and marked so; a state left behind only weighs on the repository
        log(f"warning: {stage.name}: its resume states were not removed ({e})")
        return
    if removed:
        log(f"{stage.name} is done: its resume states removed ({', '.join(str(p) for p in removed)})")


def _check_finished(root: Path, stage: Stage, log) -> None:
    """After a resumable run ended: its committed curve against the records of its earlier pieces."""
    files = pieces.run_files(stage.cmd)
    if files is None or not (root / files[1]).exists():
        return
    try:
        points = json.loads((root / files[1]).read_text())["points"]
        for line in pieces.check_repeats(root, stage.cmd, points):
            log(f"  repeats {line}")
    except (OSError, ValueError, KeyError) as e:
        log(f"warning: {stage.name}: its curve was not compared with its records ({type(e).__name__}: {e})")


def _dies_with(parent: int):
    """A ``preexec_fn`` that makes a run's process get SIGTERM when the campaign that started it dies, even by
    ``kill -9`` (Linux's parent-death signal): the run checkpoints and exits instead of going on, unwatched, with
    its run directory locked for the next piece. Elsewhere it does nothing."""

    def preexec() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the campaign died before the signal was set up
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec if sys.platform.startswith("linux") else None


def _stop_children(running: list, log, grace_s: float = 60.0) -> None:
    """SIGTERM to every run still running, then wait (a run checkpoints at its next step and exits)."""
    alive = [(stage, proc) for stage, proc, _ in running if proc.poll() is None]
    if not alive:
        return
    log(f"stopping {', '.join(stage.name for stage, _ in alive)}: the campaign ends")
    for _, proc in alive:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for _, proc in alive:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stage_log(logs: Path, stage: Stage) -> Path:
    return logs / f"{stage.method}-s{stage.seed}.log"


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies in it (DVC paths, relative to the project root)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def downstream_stages(root: Path, scale: str) -> list[tuple[str, tuple[str, ...]]]:
    """The stages that read ``scale``'s curves (``goldens/<scale>/runs``, or a folder holding it), and those that read
    what such a stage writes, as ``(name, deps)`` in dependency order (ties: dvc.yaml's order), never a training
    stage (they run in the campaign). Read from the pipeline DVC expands (``foreach`` and ``matrix`` included), so
    a report added to dvc.yaml is re-run by the campaign without another list to keep."""
    runs = f"goldens/{scale}/runs"
    stages = _other_stages(root)

    def reads(dep: str, path: str) -> bool:  # a dependency on a path, a folder holding it, or a file inside it
        return _inside(dep, path) or _inside(path, dep)

    readers = {name for name, deps, _ in stages if any(reads(d, runs) for d in deps)}
    writes = {name: outs for name, _, outs in stages}
    grew = True
    while grew:
        grew = False
        for name, deps, _ in stages:
            if name not in readers and any(reads(d, o) for r in readers for o in writes[r] for d in deps):
                readers.add(name)
                grew = True
    order: list[tuple[str, tuple[str, ...]]] = []
    left = [(name, deps) for name, deps, _ in stages if name in readers]
    while left:  # each stage after every reader whose output it reads
        ready = [
            (n, deps)
            for n, deps in left
            if not any(m != n and reads(d, o) for m, _ in left for o in writes[m] for d in deps)
        ]
        if not ready:
            raise ValueError(f"dvc.yaml: the stages {', '.join(n for n, _ in left)} read each other's outputs")
        order += ready
        left = [x for x in left if x not in ready]
    return order


def _absent(root: Path, deps) -> list[str]:
    """The dependencies in ``deps`` that do not exist under ``root`` yet."""
    return [d for d in deps if not (root / d).exists()]


def _repro_single(root: Path, name: str, capture: bool = False) -> tuple[int, list[str]]:
    """``dvc repro --single-item name`` (that stage alone, never its upstream): its exit status and, when
    ``capture``, the last lines it wrote (otherwise its output goes to the terminal)."""
    out = subprocess.run(["dvc", "repro", "--single-item", name], cwd=root, capture_output=capture, text=True)
    tail = ((out.stderr or "").strip() or (out.stdout or "").strip()).splitlines()[-3:] if capture else []
    return out.returncode, tail


def run_downstream(root: Path, scale: str, log=print) -> None:
    """Re-run the stages that read ``scale``'s curves (:func:`downstream_stages`), each alone (``--single-item``:
    never the training upstream); a stage whose inputs are not made yet (the long horizon's targets before the
    baseline's runs) is skipped. A stage that fails does not stop the others: those that read what it writes are
    skipped (their inputs would be stale), the rest run, and the failures are raised together at the end."""
    writes = {name: outs for name, _, outs in _other_stages(root)}
    failed: list[str] = []
    stale: set[str] = set()  # outputs of a failed or skipped stage
    skipped: list[str] = []
    for name, deps in downstream_stages(root, scale):
        missing = _absent(root, deps)
        if missing:
            log(f"skip {name}: its inputs are not made yet ({', '.join(missing)})")
            continue
        after = [d for d in deps if any(_inside(d, o) or _inside(o, d) for o in stale)]
        if after:
            log(f"skip {name}: it reads what a failed stage writes ({', '.join(after)})")
            skipped.append(name)
            stale.update(writes.get(name, ()))
            continue
        log(f"dvc repro --single-item {name}")
        rc, _ = _repro_single(root, name)
        if rc != 0:
            log(f"FAILED dvc repro --single-item {name} ({rc}); the stages that do not read its outputs go on")
            failed.append(f"{name} ({rc})")
            stale.update(writes.get(name, ()))
    if failed:
        also = f"; skipped after them: {', '.join(skipped)}" if skipped else ""
        raise RuntimeError(f"dvc repro --single-item failed for {', '.join(failed)}{also}")
