"""Pre-registration, checked against the history: was each experiment spec's deciding rule committed before its data?

A spec's *deciding fields* are the fields of its ``check`` that decide its verdict (:data:`DECIDING`, defaults filled),
together with what the targets they name meant at the time (:data:`TARGET_REDEFINITIONS`: the ``final`` target was the
baseline seeds' mean final value until commit ``f05ccb6``; that target is now called ``final-mean``). The *data* of a
spec is the first committed run (``goldens/<scale>/runs/<method>-s<seed>.json``, any of the spec's scales) of each
method its deciding fields name, the report's baseline included; the spec is *frozen* from the commit at which the
last of those methods got its first run.

:func:`check_spec` walks the git history of one spec and returns what does not hold:

* every change of its deciding fields at or after the freeze (a commit that changed the spec, or a redefinition of a
  target it names, or the uncommitted working tree) is listed under the spec's ``amended``, in order, each entry by
  its commit (a prefix) or, for a change not committed yet, by its date;
* a spec with amendments names, under ``registered``, the deciding fields as they stood just before the freeze (its
  ``commit`` a prefix of the commit they were last changed in), with a redefined target written by its present name;
* no spec lists amendments that the history does not show.

The ledger itself never reads git: it prints what the spec declares, and ``tests/test_preregistration.py`` runs this
check on every spec, so a declaration that does not match the history fails CI.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .goldens import keys_of

DECIDING = ("file", "value", "relation", "threshold", "threshold_path", "margin", "min_seeds", "if_hold")
DEFAULTS = {"file": "speedup.json", "margin": 0.0, "min_seeds": 3, "if_hold": "confirmed"}
PATH_FIELDS = ("value", "threshold_path")
SECTIONS = ("unit_results", "late_slope", "final_values", "matched_slope", "growth")

TARGET_REDEFINITIONS = ({"commit": "f05ccb6", "target": "final", "before": "final-mean"},)
"""Targets whose meaning changed: before ``commit``, ``target`` meant what is now called ``before``."""


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def history_available(root: Path) -> bool:
    """Whether ``root`` is a git checkout with its whole history (a shallow clone cannot say when a run landed)."""
    try:
        return _git(root, "rev-parse", "--is-shallow-repository").strip() == "false"
    except (RuntimeError, OSError):
        return False


@dataclass
class Event:
    commit: str | None  # None: the uncommitted working tree
    date: str
    fields: dict[str, Any] | None  # None: the spec does not exist at this event


class History:
    """The repository's commits in topological order, and the questions the check asks of them (memoized)."""

    def __init__(self, root: Path):
        self.root = root
        self.order = {c: i for i, c in enumerate(_git(root, "rev-list", "--topo-order", "--reverse", "HEAD").split())}
        self._first_run: dict[tuple[str, str], str | None] = {}

    def full(self, prefix: str) -> str | None:
        hits = [c for c in self.order if c.startswith(prefix)]
        return hits[0] if len(hits) == 1 else None

    def date(self, commit: str) -> str:
        stamp = _git(self.root, "show", "-s", "--format=%ct", commit).strip()
        return datetime.datetime.fromtimestamp(int(stamp), datetime.UTC).date().isoformat()

    def at_or_after(self, commit: str, other: str) -> bool:
        """Whether ``commit`` is ``other`` or a descendant of it."""
        ok = subprocess.run(["git", "merge-base", "--is-ancestor", other, commit], cwd=self.root, capture_output=True)
        return ok.returncode == 0

    def spec_commits(self, path: str) -> list[str]:
        commits = _git(self.root, "log", "--format=%H", "--", path).split()
        return sorted(commits, key=self.order.__getitem__)

    def text_at(self, commit: str, path: str) -> str | None:
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=self.root, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else None

    def first_run(self, scale: str, method: str) -> str | None:
        key = (scale, method)
        if key not in self._first_run:
            pattern = f"goldens/{scale}/runs/{method}-s[0-9]*.json"
            added = _git(self.root, "log", "--diff-filter=A", "--format=%H", "--", pattern).split()
            self._first_run[key] = min(added, key=self.order.__getitem__) if added else None
        return self._first_run[key]


def deciding_fields(check: Mapping[str, Any], redefined: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The deciding fields of a ``check`` mapping, defaults filled, paths as key lists, and each target of
    ``redefined`` (redefinitions made after this version of the spec) written by the name its meaning has now."""
    out = {k: check.get(k, DEFAULTS.get(k)) for k in DECIDING if k in check or k in DEFAULTS}
    for field in PATH_FIELDS:
        if field in out and out[field] is not None:
            keys = keys_of(out[field])
            for r in redefined:
                if len(keys) > 2 and keys[0] == "unit_results" and keys[2] == r["target"]:
                    keys = [*keys[:2], r["before"], *keys[3:]]
            out[field] = keys
    if isinstance(out.get("threshold"), int) and not isinstance(out.get("threshold"), bool):
        out["threshold"] = float(out["threshold"])
    out["margin"] = float(out.get("margin") or 0.0)
    return out


def _methods(fields: Mapping[str, Any], baseline: str | None) -> set[str]:
    out = {str(keys[1]) for f in PATH_FIELDS if (keys := fields.get(f)) and len(keys) > 1 and keys[0] in SECTIONS}
    if out and baseline:
        out.add(baseline)
    return out


def _baseline(goldens: Path, scales: Sequence[str], file: str) -> str | None:
    for scale in scales:
        path = goldens / scale / file
        if path.exists():
            try:
                return json.loads(path.read_text()).get("baseline")
            except (OSError, ValueError, AttributeError):
                return None
    return None


def _registered_fields(registered: Mapping[str, Any]) -> dict[str, Any]:
    return deciding_fields({k: v for k, v in registered.items() if k != "commit"})


def events_of(history: History, spec_path: str, today: str) -> list[Event]:
    """The versions of a spec's deciding fields, oldest first: each commit that touched the spec, each target
    redefinition while it existed, and the working tree when it differs from HEAD."""
    commits = history.spec_commits(spec_path)
    redefinitions = [(history.full(r["commit"]), r) for r in TARGET_REDEFINITIONS]
    points = set(commits) | {c for c, _ in redefinitions if c}
    events = []
    for commit in sorted(points, key=history.order.__getitem__):
        text = history.text_at(commit, spec_path)
        data = yaml.safe_load(text) if text else None
        check = data.get("check") if isinstance(data, Mapping) and data.get("kind") == "experiment" else None
        later = [r for c, r in redefinitions if c and not history.at_or_after(commit, c)]
        fields = deciding_fields(check, later) if isinstance(check, Mapping) else None
        events.append(Event(commit, history.date(commit), fields))
    worktree = history.root / spec_path
    if worktree.exists() and worktree.read_text() != (history.text_at("HEAD", spec_path) or ""):
        data = yaml.safe_load(worktree.read_text())
        check = data.get("check") if isinstance(data, Mapping) and data.get("kind") == "experiment" else None
        events.append(Event(None, today, deciding_fields(check) if isinstance(check, Mapping) else None))
    return events


def check_spec(history: History, spec: Any, goldens: Path, today: str | None = None) -> list[str]:
    """What does not hold of ``spec``'s declared pre-registration (its ``amended`` and ``registered``), by the
    history; an empty list when it holds. See the module's docstring for the rules."""
    today = today or datetime.datetime.now(datetime.UTC).date().isoformat()
    if spec.kind != "experiment":
        return []
    path = str(spec.path.relative_to(history.root)) if spec.path.is_absolute() else str(spec.path)
    events = [e for e in events_of(history, path, today) if e.fields is not None]
    if not events:
        return [f"{spec.id}: no committed version of {path}"]
    scales = [s for s in spec.check["scales"] if s != "paper"]
    methods: set[str] = set()
    for e in events:
        methods |= _methods(e.fields, _baseline(goldens, scales, e.fields["file"]))
    firsts = {m: [c for s in scales if (c := history.first_run(s, m))] for m in sorted(methods)}
    problems = []
    if not methods or any(not v for v in firsts.values()):
        freeze = None  # some method has no data yet: every change so far was made before the data
    else:
        freeze = max((min(v, key=history.order.__getitem__) for v in firsts.values()), key=history.order.__getitem__)
    changes, before = [], None
    for i, e in enumerate(events):
        after = freeze is not None and (e.commit is None or history.at_or_after(e.commit, freeze))
        if i == 0 and after:
            problems.append(f"{spec.id}: first committed at {e.commit[:7]}, after its data ({freeze[:7]})")
        if i > 0 and e.fields != events[i - 1].fields and after:
            changes.append(e)
        if not after:
            before = e
    declared = list(spec.amended)
    if len(declared) != len(changes):
        found = ", ".join(f"{(c.commit or 'working tree')[:7]} ({c.date})" for c in changes) or "none"
        problems.append(
            f"{spec.id}: {len(declared)} amendment(s) declared, the history shows {len(changes)} change(s) of the "
            f"deciding fields at or after its data ({freeze[:7] if freeze else 'no data yet'}): {found}"
        )
    for d, c in zip(declared, changes):
        if c.commit is None:
            ok = "commit" not in d and d["date"] == c.date
        else:
            ok = c.commit.startswith(str(d.get("commit", "-"))) or ("commit" not in d and d["date"] == c.date)
        if not ok:
            problems.append(f"{spec.id}: amendment {d} does not match the change at {(c.commit or 'working tree')[:7]}")
    if changes:
        reg = spec.registered
        if reg is None or before is None:
            problems.append(f"{spec.id}: amended after the data, so 'registered' must give the fields first registered")
        else:
            if _registered_fields(reg) != before.fields:
                problems.append(
                    f"{spec.id}: registered {_registered_fields(reg)}, but before its data it read {before.fields}"
                )
            made = [e.commit for e in events if e.commit and e.fields == before.fields]
            made = [c for c in made if not history.at_or_after(c, freeze)]
            if not any(c.startswith(str(reg["commit"])) for c in made):
                problems.append(
                    f"{spec.id}: registered.commit {reg['commit']} is not a commit of the version registered before "
                    f"the data ({', '.join(c[:7] for c in made) or 'none'})"
                )
    elif spec.registered is not None:
        problems.append(f"{spec.id}: 'registered' given, but no change of the deciding fields after the data")
    return problems
