"""Where a long run paused by a piece can be resumed from on the next machine: a copy outside the work tree and, for
a fresh machine, a compressed copy in git.

A long run's checkpoint (``runs/<scale>/<run>/checkpoints/last.pt``, 33 MB at micro: weights, EMA and AdamW's two
moments in float32) is lost with the work tree: a later session may get the same machine with its work tree laid
anew, or a new machine. Restarting repeats the same curve (the run is seeded) but costs every hour the run had
trained, and a DiT long run is longer than two pieces, so a run that restarts on every new machine may never end.
After each pause the campaign therefore keeps the run's resume state (its ``config.json``, ``metrics.jsonl`` and
``checkpoints/last.pt``, byte for byte) in two places:

- the machine's store outside the work tree (``~/.cache/repro/resume/<scale>/<run>/``, or ``$REPRO_RESUME_STORE``):
  it survives a work tree laid anew on the same machine and costs the repository nothing;
- ``goldens/resume/<scale>/<run>.xz`` with its manifest ``<run>.json``, committed with the piece: the same files,
  the checkpoint's bytes regrouped by position in each 4-byte word (the sign and exponent bytes of the float32s
  compress, the low mantissa bytes do not) and xz-compressed, 26 MB at micro. It is rewritten at each pause (git
  keeps each version, so the history grows by that much per paused run per piece) and deleted when the run ends.
  The campaign rewrites it only when the run trained long enough since the committed state (``min_commit_seconds``
  of :func:`save`): a run started minutes before a piece's deadline costs a fresh machine those minutes, not the
  repository another 26 MB.

Before a resumable run starts without a checkpoint, the campaign installs the newest of the two whose checkpoint is
one a committed pause record of the run names (:mod:`repro.experiments.pieces`): the record is what says that this
state is this run's, at that step, with that curve so far. The restored checkpoint is byte-identical to the one the
run wrote (its sha256 is checked), so the run resumes bitwise as if the machine had been kept. A state that fails a
check is reported and skipped; the run then starts over, as it did before resume states existed.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes, atomic_write_json
from . import pieces

RESUME = Path("goldens") / "resume"
"""The committed resume states, per scale: ``goldens/resume/<scale>/<run>.xz`` and ``<run>.json``."""
STORE_ENV = "REPRO_RESUME_STORE"
"""The environment variable that moves the machine's store (default ``~/.cache/repro/resume``)."""
CHECKPOINT = "checkpoints/last.pt"
FILES = ("config.json", "metrics.jsonl", CHECKPOINT)
"""A run directory's files that resume it (the checkpoint is required, the others are kept where they exist)."""
FORMAT = "repro-resume-1"
"""tar of FILES, the checkpoint as ``checkpoints/last.pt.t4`` (its bytes regrouped by position in 4-byte words,
the length kept), xz-compressed."""
TRANSPOSED = CHECKPOINT + ".t4"
PRESET = 6


class ResumeError(RuntimeError):
    """A resume state that cannot be used: it names the file and what failed."""


@dataclass(frozen=True)
class Restored:
    step: int
    source: Path  # the store folder or the committed archive it came from
    committed: bool  # from git (a fresh machine) rather than from the machine's store


def store_root() -> Path:
    """The machine's store of resume states, outside any work tree."""
    override = os.environ.get(STORE_ENV)
    return Path(override) if override else Path.home() / ".cache" / "repro" / "resume"


def _names(cmd: str) -> tuple[Path, str, str] | None:
    """A run command's run directory, scale and run name (``--curve goldens/<scale>/runs/<run>.json``)."""
    files = pieces.run_files(cmd)
    if files is None:
        return None
    out, curve = files
    return out, curve.parent.parent.name, curve.stem


def committed_paths(root: Path, cmd: str) -> tuple[Path, Path] | None:
    """The committed archive and manifest of the run ``cmd`` trains."""
    names = _names(cmd)
    if names is None:
        return None
    _, scale, run = names
    folder = root / RESUME / scale
    return folder / f"{run}.xz", folder / f"{run}.json"


def store_path(cmd: str, store: Path | None = None) -> Path | None:
    names = _names(cmd)
    return None if names is None else (store or store_root()) / names[1] / names[2]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def transpose4(data: bytes) -> bytes:
    """The bytes regrouped by their position in each 4-byte word (a tail shorter than a word kept at the end)."""
    import numpy as np

    n = len(data) // 4 * 4
    words = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, 4)
    return words.T.tobytes() + data[n:]


def untranspose4(data: bytes) -> bytes:
    import numpy as np

    n = len(data) // 4 * 4
    planes = np.frombuffer(data, dtype=np.uint8, count=n).reshape(4, -1)
    return planes.T.tobytes() + data[n:]


def _read_run(run_dir: Path) -> dict[str, bytes]:
    found = {name: (run_dir / name).read_bytes() for name in FILES if (run_dir / name).is_file()}
    if CHECKPOINT not in found:
        raise ResumeError(f"{run_dir / CHECKPOINT}: no checkpoint to keep")
    return found


def _manifest(cmd: str, files: dict[str, bytes], step: int, seconds: float) -> dict[str, Any]:
    from ..provenance import git_commit
    from ..runtime import cpu_model

    return {
        "format": FORMAT,
        "command": cmd,
        "step": step,
        "seconds": seconds,
        "checkpoint_sha256": _sha(files[CHECKPOINT]),
        "files": {name: {"sha256": _sha(data), "bytes": len(data)} for name, data in files.items()},
        "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_model": cpu_model(), "boot_id": pieces.boot_id()},
        "git_commit": git_commit(),
    }


def pack(files: dict[str, bytes]) -> bytes:
    """The archive of a run's resume files (FORMAT)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=PRESET, format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            stored = transpose4(data) if name == CHECKPOINT else data
            info = tarfile.TarInfo(TRANSPOSED if name == CHECKPOINT else name)
            info.size, info.mtime, info.mode = len(stored), 0, 0o644
            tar.addfile(info, io.BytesIO(stored))
    return buf.getvalue()


def unpack(archive: Path) -> dict[str, bytes]:
    """The files an archive holds, as the run wrote them."""
    try:
        with tarfile.open(archive, mode="r:xz") as tar:
            files = {}
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is None:
                    raise ResumeError(f"{archive}: member {member.name!r} is not a file")
                data = handle.read()
                if member.name == TRANSPOSED:
                    files[CHECKPOINT] = untranspose4(data)
                elif member.name in FILES:
                    files[member.name] = data
                else:
                    raise ResumeError(f"{archive}: member {member.name!r} is not allowed; allowed: {list(FILES)}")
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as e:
        raise ResumeError(f"{archive}: not a readable resume archive ({type(e).__name__}: {e})") from None
    return files


def _check(files: dict[str, bytes], manifest: dict[str, Any], where: Path) -> None:
    expected = manifest.get("files")
    if not isinstance(expected, dict) or CHECKPOINT not in expected:
        raise ResumeError(f"{where}: its manifest lists no {CHECKPOINT}")
    if set(files) != set(expected):
        raise ResumeError(f"{where}: holds {sorted(files)}, its manifest lists {sorted(expected)}")
    for name, data in files.items():
        if _sha(data) != expected[name].get("sha256"):
            raise ResumeError(f"{where}: {name}'s sha256 differs from its manifest's (the state is damaged)")


def trained_since_committed(root: Path, cmd: str, seconds: float) -> float:
    """The training seconds a run at ``seconds`` (its checkpoint's training clock) has added since its committed
    state; all of them when it has none that could resume it: no archive, a manifest of another command or from
    before the ``seconds`` field, or a state ahead of the run (the run started over without it, so the committed
    state is not one it came from, and a fresh machine could not use it)."""
    paths = committed_paths(root, cmd)
    if paths is None or not paths[0].is_file() or not paths[1].is_file():
        return seconds
    try:
        committed = json.loads(paths[1].read_text())
    except (OSError, ValueError):
        return seconds
    base = committed.get("seconds") if isinstance(committed, dict) and committed.get("command") == cmd else None
    if not isinstance(base, int | float) or base > seconds:
        return seconds
    return seconds - float(base)


def save(
    root: Path, cmd: str, *, commit: bool = True, store: Path | None = None, min_commit_seconds: float = 0.0
) -> dict[str, Any] | None:
    """After ``cmd``'s run paused: its resume state into the machine's store and (``commit``) into
    ``goldens/resume/``, the latter only when the run trained at least ``min_commit_seconds`` since its committed
    state (:func:`trained_since_committed`). None when the command names no run or the run has no checkpoint.
    Returns the manifest, with ``archive_bytes`` when committed and ``trained_since_committed`` (seconds) when not
    for lack of training."""
    names = _names(cmd)
    if names is None or not (root / names[0] / CHECKPOINT).is_file():
        return None
    files = _read_run(root / names[0])
    state = pieces.checkpoint_state(root / names[0] / CHECKPOINT)
    manifest = _manifest(cmd, files, state["step"], state["seconds"])
    trained = trained_since_committed(root, cmd, state["seconds"])
    if commit and trained < min_commit_seconds:
        commit = False
        manifest = manifest | {"trained_since_committed": trained}
    folder = store_path(cmd, store)
    assert folder is not None
    for name, data in files.items():  # the checkpoint last: a folder with one is complete
        if name != CHECKPOINT:
            atomic_write_bytes(folder / name, data)
    atomic_write_bytes(folder / CHECKPOINT, files[CHECKPOINT])
    atomic_write_json(folder / "state.json", manifest)
    if commit:
        archive, manifest_path = committed_paths(root, cmd)  # type: ignore[misc]
        data = pack(files)
        atomic_write_bytes(archive, data)
        manifest = manifest | {"archive_sha256": _sha(data), "archive_bytes": len(data)}
        atomic_write_json(manifest_path, manifest)
    return manifest


def _manifest_of(path: Path, warn) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warn(f"{path}: unreadable ({e}); its resume state is not used")
        return None
    if not isinstance(data, dict):
        warn(f"{path}: not a JSON object; its resume state is not used")
        return None
    return data


def _candidates(root: Path, cmd: str, store: Path | None, warn) -> list[tuple[Path, bool, dict[str, Any]]]:
    found = []
    folder = store_path(cmd, store)
    if folder is not None and (folder / "state.json").is_file() and (folder / CHECKPOINT).is_file():
        manifest = _manifest_of(folder / "state.json", warn)
        if manifest is not None:
            found.append((folder, False, manifest))
    paths = committed_paths(root, cmd)
    if paths is not None and paths[0].is_file() and paths[1].is_file():
        manifest = _manifest_of(paths[1], warn)
        if manifest is not None:
            found.append((paths[0], True, manifest))
    return found


def usable(
    root: Path, cmd: str, *, store: Path | None = None, warn=print
) -> list[tuple[int, Path, bool, dict[str, Any]]]:
    """``cmd``'s resume states whose checkpoint a committed pause record of the run names, in the order
    :func:`restore` tries them: newest recorded step first, the machine's store before git at the same step. Each
    ``(step, source, committed, manifest)``; each state left out is said through ``warn``. Reads manifests only."""
    recorded = {rec.get("checkpoint_sha256"): rec.get("step") for _, rec in pieces.records_of(root, cmd)}
    found = []
    for source, committed, manifest in _candidates(root, cmd, store, warn):
        sha = manifest.get("checkpoint_sha256")
        if sha not in recorded:
            warn(f"{source}: its checkpoint is not one a committed pause record of this run names; not used")
            continue
        found.append((int(recorded[sha]), not committed, source, committed, manifest))
    found.sort(key=lambda u: u[:2], reverse=True)
    return [(step, source, committed, manifest) for step, _, source, committed, manifest in found]


def _load(source: Path, committed: bool, manifest: dict[str, Any]) -> dict[str, bytes]:
    if committed:
        data = source.read_bytes()
        if _sha(data) != manifest.get("archive_sha256"):
            raise ResumeError(f"{source}: its sha256 differs from its manifest's archive_sha256 (the file is damaged)")
        files = unpack(source)
    else:
        files = {name: (source / name).read_bytes() for name in FILES if (source / name).is_file()}
    _check(files, manifest, source)
    return files


def restore(root: Path, cmd: str, *, store: Path | None = None, warn=print) -> Restored | None:
    """Before ``cmd``'s run starts: when its run directory has no checkpoint, install the newest resume state whose
    checkpoint a committed pause record of the run names (the machine's store before git at the same step). None
    when the run has a checkpoint already, or no usable state exists (each unusable one is said through ``warn``)."""
    names = _names(cmd)
    if names is None or (root / names[0] / CHECKPOINT).exists():
        return None
    for step, source, committed, manifest in usable(root, cmd, store=store, warn=warn):
        try:
            files = _load(source, committed, manifest)
        except (ResumeError, OSError, ValueError) as e:
            warn(f"not resumed from {source}: {e}")
            continue
        run_dir = root / names[0]
        for name, data in files.items():
            if name != CHECKPOINT:
                atomic_write_bytes(run_dir / name, data)
        atomic_write_bytes(run_dir / CHECKPOINT, files[CHECKPOINT])
        return Restored(step, source, committed)
    return None


def drop(root: Path, cmd: str, *, store: Path | None = None) -> list[Path]:
    """After ``cmd``'s run ended: its resume states are no longer needed (git keeps the committed one's history).
    The paths removed."""
    removed = []
    paths = committed_paths(root, cmd)
    for path in paths or ():
        if path.exists():
            path.unlink()
            removed.append(path)
    folder = store_path(cmd, store)
    if folder is not None and folder.exists():
        shutil.rmtree(folder)
        removed.append(folder)
    return removed
