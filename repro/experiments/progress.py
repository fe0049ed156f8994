"""Where a campaign stands, run by run (``repro campaign --status``): done, in progress (paused or running: at
which step, and whether the next piece resumes it from this machine's checkpoint, from a committed resume state, or
from step 0 on a fresh machine), waiting for an input, or not started; with each run's newest evaluation and
training time so far.

It reads what a piece leaves behind and runs nothing: the committed curves (``goldens/<scale>/runs``), the pause
records (``goldens/<scale>/pieces``), the committed resume states (``goldens/resume/<scale>``), the machine's store
and ``runs/``. A checkpoint in ``runs/`` may be newer than any record (a run in flight, or a piece cut short)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import pieces, resume
from .resume import CHECKPOINT


def _last(points: list[dict[str, Any]], key: str) -> tuple[int, float] | None:
    """The newest ``(step, value)`` of ``key`` among ``points``."""
    found = [(int(p["step"]), float(p[key])) for p in points if p.get(key) is not None and "step" in p]
    return max(found) if found else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_status(root: Path, stage, done: bool, store: Path | None = None) -> dict[str, Any]:
    """One run's row: ``state``, ``step``, ``hours`` (training, evaluations not counted), ``fid`` and ``val_loss``
    (``(step, value)`` of the newest evaluation, or None), ``resumes_from`` and ``source`` (what the row was read
    from)."""
    row: dict[str, Any] = {"run": stage.name, "state": "not started", "step": 0, "hours": 0.0}
    row.update(fid=None, val_loss=None, resumes_from=None, source=None)
    files = pieces.run_files(stage.cmd)
    if files is None:
        return row | {"state": "not a run command"}
    out, curve = files
    if done:
        data = _read_json(root / curve)
        points = (data or {}).get("points") or []
        last = points[-1] if points else {}
        return row | {
            "state": "done",
            "step": int(last.get("step", 0)),
            "hours": float(last.get("seconds", 0.0)) / 3600.0,
            "fid": _last(points, "fid"),
            "val_loss": _last(points, "val_loss"),
            "source": str(curve),
        }
    candidates: list[tuple[int, float, list, str]] = []  # (step, seconds, points, where)
    records = pieces.records_of(root, stage.cmd)
    if records:
        path, rec = records[-1]
        candidates.append((int(rec.get("step", 0)), float(rec.get("seconds", 0.0)), rec["points"], str(path.name)))
    ckpt = root / out / CHECKPOINT
    local = None
    if ckpt.exists():
        try:
            local = pieces.checkpoint_state(ckpt)
        except Exception as err:  # a checkpoint being replaced, or not one of repro train's: said, not fatal
            row["warning"] = f"{ckpt.relative_to(root)} unreadable ({type(err).__name__})"
        else:
            candidates.append((local["step"], local["seconds"], local["points"], f"{out / CHECKPOINT}"))
    states = resume.usable(root, stage.cmd, store=store, warn=lambda _: None)  # the campaign installs the first
    if local is not None:
        row["resumes_from"] = f"this machine's checkpoint (step {local['step']})"
    elif states:
        step0, _, committed, _ = states[0]
        where = "the committed resume state" if committed else "this machine's store of resume states"
        row["resumes_from"] = f"{where} (step {step0})"
    else:
        row["resumes_from"] = "step 0 (no checkpoint or resume state here)"
    if stage.waits_for:
        row["state"] = f"waiting for {', '.join(stage.waits_for)}"
    if not candidates:
        return row
    step, seconds, points, where = max(candidates, key=lambda c: c[0])
    if not stage.waits_for:
        row["state"] = "in progress" if step > 0 else "not started"  # paused, or running now
    return row | {
        "step": step,
        "hours": seconds / 3600.0,
        "fid": _last(points, "fid"),
        "val_loss": _last(points, "val_loss"),
        "source": where,
    }


def campaign_status(root: Path, scale: str, store: Path | None = None) -> dict[str, Any]:
    """Every training stage of ``scale`` (:func:`run_status`), and the scale's targets when it has them."""
    from .campaign import pending

    targets = _read_json(root / "goldens" / scale / "targets.json")
    rows = [run_status(root, s, s.up_to_date, store) for s in pending(root, everything=True, scale=scale)]
    return {"scale": scale, "targets": targets, "runs": rows}


def _value(pair: tuple[int, float] | None, fmt: str) -> str:
    return "-" if pair is None else f"{pair[1]:{fmt}} @{pair[0]}"


def format_status(status: dict[str, Any]) -> str:
    """The status as a table, one line a run, with the totals under it."""
    rows = status["runs"]
    head = ("run", "state", "step", "train h", "FID (newest)", "val loss (newest)", "next piece resumes from")
    body = [
        (
            r["run"],
            r["state"],
            str(r["step"]),
            f"{r['hours']:.2f}",
            _value(r["fid"], ".3f"),
            _value(r["val_loss"], ".5f"),
            "-" if r["state"] == "done" else r["resumes_from"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    done = sum(r["state"] == "done" for r in rows)
    hours = sum(r["hours"] for r in rows)
    lines.append(
        f"{done} of {len(rows)} runs of scale {status['scale']} done; {hours:.1f} h of training so far "
        "(each run's own steps, evaluations not counted; runs in progress as far as recorded here)"
    )
    targets = status.get("targets")
    if targets:
        shown = {k: v for k, v in targets.items() if isinstance(v, (int, float))}
        if shown:
            lines.append("targets: " + ", ".join(f"{k} {v:.6g}" for k, v in shown.items()))
    lines += [f"warning: {r['run']}: {r['warning']}" for r in rows if "warning" in r]
    return "\n".join(lines)
