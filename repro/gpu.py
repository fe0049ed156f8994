"""The small-scale GPU campaign as one prepared call, and the folder of wheels and data it travels with.

Two commands (``python -m repro.gpu --help``):

``pack``
    On a machine with registry access: download the pinned wheels (Python 3.12, pure Python or
    manylinux x86_64) of what a CUDA image with its own torch lacks, copy Fashion-MNIST's four IDX
    files (their payloads checked against :mod:`repro.data.fashion_mnist`'s pins) and write
    ``manifest.json`` (file, sha256, bytes, the module each wheel provides). Default folder: ``.whl``.

``campaign``
    In one call of at most ``--budget-s`` seconds: install from the wheel folder whatever is not
    importable (``pip install --no-index --no-deps --target``, nothing from a registry), point the data
    loader at the carried copy, print and save the plan (the FLOPs of every part and its time at a
    stated throughput), train the small scale's runs (DiT, TREAD, SiT at equal training MACs) with FID
    and validation-loss curves of the EMA weights, then ``repro bench`` DiT-S/2, -B/2 and -XL/2 at the
    largest batch up to 256 that fits. Every run gets a time cap from what is left, a timer stops the
    whole command at its budget, and whatever exists is always written to ``--out``:

    - ``plan.json``: assumptions and per-part FLOPs and estimated seconds;
    - ``campaign.json``: provenance (GPU, driver, torch, CUDA, precision, seed, command, commit), the
      status and seconds of every part, the installed wheels, each run's training log;
    - ``curves/<method>-s<seed>.json``: the runs' curves (written after every evaluation);
    - ``bench.json``: one ``repro bench`` report per model;
    - ``long.json``, ``tokens.json`` (with ``--parts long tokens``): each part's sizing, runs, curves and targets;
    - ``log.txt``: everything the command printed.

    ``--parts`` picks what runs (default ``small bench``, the above); ``long`` and ``tokens`` are the long horizon
    to 17.5x the core budget (the 37x analogue, scale ``gpu-long``) and the token axis at 256 tokens (scale
    ``gpu-tokens``), each sized from counted FLOPs and the step measured in its own first ``--probe-s`` seconds,
    capped by the time left, skipped with its reason when it does not fit, and written as one bundle
    (``long.json``, ``tokens.json``; see :mod:`repro.gpu_axes`).

    ``--dry-run`` runs the same code at a tiny size on the CPU (the tests run it).

``land OUT``
    Copy a GPU campaign's outputs into ``goldens/small/`` (curves under ``runs/``, where ``repro rerun
    --scale small`` and ``nox -s gpu_repro`` compare re-runs with them), and the ``long`` / ``tokens`` bundles into
    ``goldens/small/long/`` and ``goldens/small/tokens/`` with their ladders in ``goldens/small/speedup-long.json``
    and ``speedup-tokens.json`` (read by the ledger at scale small); a dry run is refused.

Throughput assumption. An H200 multiplies 8192^3 bf16 matrices at about 790 TFLOP/s (measured); the
plan assumes a DiT-S/2 training step at 256 tokens reaches 30% of that in eager PyTorch (``--mfu``),
and that sampling, which runs in fp32 with TF32 matmuls outside autocast, reaches the same fraction of
half that rate. FLOPs = 2 x MACs counted on the meta device.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import gpu_axes
from .provenance import git_commit, provenance, sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WHEELS = REPO_ROOT / ".whl"
MANIFEST = "manifest.json"
DATA_SUBDIR = "data"

#: Pinned wheels the campaign may need: name -> (version, importable module). The image has torch 2.11,
#: torchvision, numpy, scipy, matplotlib, pyyaml, tqdm, huggingface-hub 1.33, safetensors 0.8, Pillow,
#: filelock, regex, requests and zipp; diffusers 0.42 needs huggingface-hub >= 1.32 and safetensors >= 0.8
#: (satisfied there) and importlib_metadata (not there), which needs zipp (there) and lazy-importer (not
#: there); torch-fidelity needs only what the image has.
PINS: dict[str, tuple[str, str]] = {
    "diffusers": ("0.42.1", "diffusers"),
    "torch-fidelity": ("0.4.0", "torch_fidelity"),
    "importlib-metadata": ("10.2.0", "importlib_metadata"),
    "lazy-importer": ("0.1.0", "lazy_importer"),  # importlib_metadata 10 needs it on Python < 3.15
}
#: Distributions the image provides (only the ones the pinned wheels require are listed).
IMAGE_HAS = frozenset(
    "torch torchvision numpy scipy matplotlib pyyaml tqdm pytest hypothesis huggingface-hub safetensors pillow "
    "filelock regex requests zipp".split()
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYTHON_VERSION = "3.12"

H200_BF16_TFLOPS = 790.0  # measured: 8192^3 bf16 matrix products through PyTorch on one H200
CPU_ASSUMED_TFLOPS = 0.05  # the dry run's stated CPU rate (fp32, 2 cores); only sizes its plan
BENCH_MODELS = ("DiT-S/2", "DiT-B/2", "DiT-XL/2")
BENCH_METHODS = ("dit", "tread")
PARTS = ("small", "bench", "long", "tokens")  # what --parts may name; long and tokens: repro/gpu_axes.py
DEFAULT_PARTS = ("small", "bench")

# The dry run: the same code at a size a 2-core CPU runs in seconds
DRY_MODEL = {"patch_size": 4, "hidden_size": 32, "depth": 8, "num_heads": 2}
DRY_DATA = {"subset": 1024}
DRY_TRAIN = {"steps": 6, "batch_size": 8, "eval_every": 2, "ckpt_every": 6, "log_every": 5, "precision": "fp32",
             "threads": 1}  # fmt: skip
DRY_EVAL = {"num_samples": 50, "sample_steps": 2, "reference_size": 300, "val_size": 16, "val_points": 2,
            "batch_size": 50, "metrics": ["fid"]}  # fmt: skip
DRY_BENCH = {"input_size": 8, "in_channels": 4, "num_classes": 10, "hidden_size": 32, "num_heads": 2}


class BudgetExceeded(BaseException):
    """The campaign's wall-clock budget ran out (raised by its timer; a BaseException so no part swallows it)."""


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# ---------------------------------------------------------------------------------------------------------------------
# Gathering the wheel folder (a machine with registry access)


def wheel_requirements(path: Path) -> list[str]:
    """The unconditional ``Requires-Dist`` names of a wheel (extras and environment markers left out)."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8")
    from packaging.requirements import Requirement

    env = {"python_version": PYTHON_VERSION, "python_full_version": f"{PYTHON_VERSION}.0", "extra": "",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}  # fmt: skip
    names = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                names.append(_normalize(req.name))
    return names


def _wheel_for(folder: Path, name: str, version: str) -> Path:
    stem = name.replace("-", "_").lower()
    hits = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if len(hits) != 1:
        raise FileNotFoundError(f"pack: expected one wheel of {name}=={version} in {folder}, found {len(hits)}")
    return hits[0]


def copy_data(dest: Path) -> list[dict[str, Any]]:
    """Fashion-MNIST's four IDX files (gzip) into ``dest``, each payload checked against the pinned sha256."""
    import gzip

    from .data import fashion_mnist as fm

    source = fm.find_data_dir(download=None)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in fm.ALL_FILES:
        src = fm._file_in(source, name)
        payload = fm.read_payload(src, name)  # raises on a wrong payload
        target = dest / f"{name}.gz"
        if src.suffix == ".gz":
            shutil.copyfile(src, target)
        else:
            target.write_bytes(gzip.compress(payload, mtime=0))
        fm.read_payload(target, name)
        rows.append({"file": f"{DATA_SUBDIR}/{target.name}", "bytes": target.stat().st_size,
                     "payload_sha256": fm.PAYLOAD_SHA256[name], "sha256": sha256_file(target)})  # fmt: skip
    return rows


def pack(dest: Path = DEFAULT_WHEELS, pins: dict[str, tuple[str, str]] = PINS, data: bool = True) -> dict[str, Any]:
    """Download the pinned wheels into ``dest`` (pip, the default index), copy the data, write the manifest."""
    from .io import atomic_write_json

    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           PYTHON_VERSION, "--implementation", "cp", "--disable-pip-version-check", "-d", str(dest)]  # fmt: skip
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    cmd += [f"{name}=={version}" for name, (version, _) in pins.items()]
    subprocess.run(cmd, check=True)
    wheels = []
    for name, (version, module) in pins.items():
        path = _wheel_for(dest, name, version)
        wheels.append({"name": name, "version": version, "module": module, "file": path.name,
                       "bytes": path.stat().st_size, "sha256": sha256_file(path),
                       "requires": wheel_requirements(path)})  # fmt: skip
    have = IMAGE_HAS | {_normalize(n) for n in pins}
    missing = sorted({r for w in wheels for r in w["requires"]} - have)
    if missing:
        raise RuntimeError(f"pack: the pinned wheels require {missing}, which neither the image nor the pins provide")
    rows = copy_data(dest / DATA_SUBDIR) if data else []
    manifest = {
        "made_by": "python -m repro.gpu pack",
        "git_commit": git_commit(),
        "python": PYTHON_VERSION,
        "platforms": list(PLATFORMS),
        "image_has": sorted(IMAGE_HAS),
        "wheels": wheels,
        "data": rows,
        "total_bytes": sum(w["bytes"] for w in wheels) + sum(r["bytes"] for r in rows),
    }
    atomic_write_json(dest / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------------------------------
# Using the wheel folder (the machine without a registry)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"--wheels: {folder} has no {MANIFEST}; make the folder with `python -m repro.gpu pack`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); make the folder again with `python -m repro.gpu pack`"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("wheels"), list):
        raise ValueError(f"{path}: 'wheels' must be a list of wheel records")
    return manifest


def check_wheels(folder: Path) -> list[dict[str, Any]]:
    """The manifest's wheel records whose module is not importable (what :func:`install_missing` installs), each
    present with its sha256 checked: the campaign checks them before it starts."""
    manifest = read_manifest(folder)
    for i, w in enumerate(manifest["wheels"]):
        if not isinstance(w, dict) or not all(isinstance(w.get(k), str) for k in ("file", "module", "sha256")):
            raise ValueError(f"{folder / MANIFEST}: wheels[{i}] must be a record with file, module and sha256")
    todo = [w for w in manifest["wheels"] if importlib.util.find_spec(w["module"]) is None]
    for w in todo:
        path = folder / w["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{folder / MANIFEST}: wheel {w['file']} is missing")
        digest = sha256_file(path)
        if digest != w["sha256"]:
            raise ValueError(f"{path}: sha256 {digest} does not match the manifest's {w['sha256']}")
    return todo


def install_missing(folder: Path, target: Path, log=print) -> list[dict[str, Any]]:
    """Install, from ``folder`` only, every manifest wheel whose module is not importable; checked by sha256.

    The wheels go to ``target`` (``pip --target``, no dependencies resolved: the manifest lists them all),
    which is put first on ``sys.path`` and ``PYTHONPATH``. Returns the installed wheel records.
    """
    todo = check_wheels(folder)
    if not todo:
        log("install: every wheel's module is already importable; nothing installed")
        return []
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--quiet", "--upgrade", "--target", str(target),
           *(str(folder / w["file"]) for w in todo)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.stdout or proc.stderr:
        log((proc.stdout + proc.stderr).strip())
    if proc.returncode:
        raise RuntimeError(f"install: pip exited with {proc.returncode}: {' '.join(cmd)}")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    for w in todo:
        if importlib.util.find_spec(w["module"]) is None:
            raise RuntimeError(f"install: {w['file']} installed but module {w['module']!r} is not importable")
    log("install: " + ", ".join(f"{w['name']} {w['version']}" for w in todo) + f" -> {target}")
    return todo


def use_carried_data(folder: Path) -> Path | None:
    """Point the data loader at ``folder/data`` when it holds the files and ``REPRO_DATA_DIR`` is unset."""
    data = folder / DATA_SUBDIR
    if os.environ.get("REPRO_DATA_DIR") or not data.is_dir():
        return None
    os.environ["REPRO_DATA_DIR"] = str(data)
    from .data import fashion_mnist

    fashion_mnist.clear_cache()
    return data


# ---------------------------------------------------------------------------------------------------------------------
# The plan


@dataclass
class Throughput:
    """FLOP/s the plan assumes: ``peak_tflops`` x ``mfu`` for training (bf16 autocast) and bench steps,
    and ``sample_factor`` x that for sampling and validation (fp32 with TF32 matmuls, no autocast), plus
    ``eval_overhead_s`` per evaluation for what FLOPs do not count (features of the samples, FID)."""

    peak_tflops: float
    mfu: float
    sample_factor: float = 0.5
    eval_overhead_s: float = 2.0  # per evaluation: feature network, FID statistics, Python (not FLOP-counted)

    def seconds(self, macs: float, sampling: bool = False) -> float:
        rate = self.peak_tflops * 1e12 * self.mfu * (self.sample_factor if sampling else 1.0)
        return 2.0 * macs / rate


def small_configs(params: dict[str, Any], dry_run: bool, seed: int | None = None) -> list:
    """The small scale's runs (each a RunConfig), or their tiny dry-run versions."""
    from .config import resolve, runs_of

    p = copy.deepcopy(params)
    s = p["scales"]["small"]
    if dry_run:
        s["model"] = {**s["model"], **DRY_MODEL}
        s["model"].pop("name", None)
        s["model"].setdefault("num_classes", 10)
        s["data"] = {**s.get("data", {}), **DRY_DATA}
        s["train"] = {**s["train"], **DRY_TRAIN}
        s["eval"] = {**s["eval"], **DRY_EVAL}
    runs = runs_of(p, "small")
    if seed is not None:
        runs = [(m, seed) for m, _ in dict(runs).items()]
    return [resolve(p, "small", method, sd) for method, sd in runs]


def run_plan(cfg, tp: Throughput) -> dict[str, Any]:
    """Counted FLOPs and estimated seconds of one run: training, sampling for FID, validation loss."""
    import torch

    from .config import run_step_macs
    from .models import DiT, dit_forward_macs

    t, e = cfg.train, cfg.eval
    step_macs = run_step_macs(cfg)  # a regularizer's extra MACs included
    with torch.device("meta"):
        dense = DiT(cfg.model.replace(routes=(), stochastic_depth=None))
    fwd = sum(dit_forward_macs(dense, 1).values())
    n_evals = sum(1 for s in range(1, t.steps + 1) if t.is_eval_step(s))
    cfg_factor = 2 if e.guidance_scale > 1 else 1
    sample_macs = n_evals * e.num_samples * e.sample_steps * fwd * cfg_factor if e.metrics else 0
    val_macs = n_evals * e.val_size * e.val_points * fwd
    train_s, sample_s, val_s = (
        tp.seconds(t.steps * step_macs),
        tp.seconds(sample_macs, True),
        tp.seconds(val_macs, True),
    )
    sample_s += n_evals * tp.eval_overhead_s if e.metrics else 0.0
    return {
        "part": f"train {cfg.run_id}",
        "steps": t.steps,
        "batch_size": t.batch_size,
        "evaluations": n_evals,
        "train_step_macs": step_macs,
        "forward_macs_per_sample": fwd,
        "train_flops": 2 * t.steps * step_macs,
        "sample_flops": 2 * sample_macs,
        "val_flops": 2 * val_macs,
        "train_s": train_s,
        "eval_s": sample_s + val_s,
        "estimate_s": train_s + sample_s + val_s,
    }


def bench_plan(model: str, batch: int, steps: int, warmup: int, tp: Throughput, overrides: dict) -> dict[str, Any]:
    from .bench import method_config
    from .models import train_step_macs

    macs = {m: train_step_macs(method_config(model, m, **overrides), batch) for m in BENCH_METHODS}
    total = (steps + warmup) * sum(macs.values())
    return {"part": f"bench {model}", "batch": batch, "step_macs": macs, "flops": 2 * total,
            "estimate_s": tp.seconds(total), "mac_ratio": macs["dit"] / macs["tread"]}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# The campaign


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):  # fileno, encoding, ...: those of the terminal stream
        return getattr(self.streams[0], name)


def _nvidia_smi() -> dict[str, str] | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or out[0].count(",") != 2:
        return None
    name, driver, memory = (x.strip() for x in out[0].split(","))
    return {"name": name, "driver": driver, "memory": memory}


def source_sha256() -> str:
    """One hash over the package's sources and params.yaml: names the code that ran where git is absent."""
    h = hashlib.sha256()
    files = sorted((REPO_ROOT / "repro").rglob("*.py")) + [REPO_ROOT / "params.yaml"]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def campaign_provenance(device, precision: str, seed: int, command: str, dry_run: bool) -> dict[str, Any]:
    import torch

    prov = provenance(
        command,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        precision=precision,
        seed=seed,
        source_sha256=source_sha256(),
        dry_run=dry_run,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        tf32=device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
        host_cpus=os.cpu_count(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        prov.update({"gpu_memory_gib": props.total_memory / 2**30, "multiprocessors": props.multi_processor_count,
                     "compute_capability": f"{props.major}.{props.minor}", "nvidia_smi": _nvidia_smi()})  # fmt: skip
    return prov


class Campaign:
    """State of one campaign call: the output folder, the clock, and the record written after every part."""

    def __init__(self, out: Path, budget_s: float, command: str):
        self.out, self.budget_s, self.command = out, budget_s, command
        self.t0 = time.monotonic()
        self.record: dict[str, Any] = {"command": command, "budget_s": budget_s, "parts": [], "status": "running"}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def save(self) -> None:
        from .io import atomic_write_json

        self.record["elapsed_s"] = round(self.elapsed(), 3)
        atomic_write_json(self.out / "campaign.json", self.record)

    @contextlib.contextmanager
    def part(self, name: str):
        """Run one part; its status (done, failed, cut) and seconds are recorded and saved whatever happens."""
        entry = {"part": name, "status": "running", "started_s": round(self.elapsed(), 3)}
        self.record["parts"].append(entry)
        self.save()
        t = time.monotonic()
        try:
            yield entry
            entry["status"] = "done" if entry["status"] == "running" else entry["status"]
        except BudgetExceeded:
            entry["status"] = "cut"
            entry["error"] = f"the campaign's budget of {self.budget_s} s ran out"
            raise
        except Exception as exc:  # one part's failure must not lose the others' evidence
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=8)
            print(f"part {name!r} failed: {entry['error']}", file=sys.stderr)
        finally:
            entry["seconds"] = round(time.monotonic() - t, 3)
            self.save()

    def skip(self, name: str, reason: str) -> None:
        self.record["parts"].append({"part": name, "status": "skipped", "reason": reason})
        print(f"skip {name}: {reason}")
        self.save()


def _format_plan(plan: dict[str, Any]) -> str:
    a = plan["assumptions"]
    lines = [
        f"plan on {plan['device']}: budget {plan['budget_s']:.0f} s "
        f"(training + evaluation {plan['train_budget_s']:.0f} s)",
        f"  assumed: {a['peak_tflops']:g} TFLOP/s peak x MFU {a['mfu']:.0%} = {a['train_tflops']:.1f} TFLOP/s "
        f"for training/bench steps, {a['sample_tflops']:.1f} TFLOP/s for sampling, "
        f"+{a['eval_overhead_s']:g} s per evaluation for the metrics ({a['note']})",
        f"  {'part':<28}{'steps/batch':>12}{'PFLOP':>10}{'est. s':>9}",
    ]
    for r in plan["parts"]:
        size = f"{r['steps']}x{r['batch_size']}" if "steps" in r else f"b{r['batch']}"
        flops = r.get("flops", r.get("train_flops", 0) + r.get("sample_flops", 0) + r.get("val_flops", 0))
        lines.append(f"  {r['part']:<28}{size:>12}{flops / 1e15:>10.2f}{r['estimate_s']:>9.1f}")
    lines.append(f"  {'total':<28}{'':>12}{'':>10}{plan['total_estimate_s']:>9.1f}")
    return "\n".join(lines)


def run_campaign(
    out: str | os.PathLike,
    *,
    budget_s: float = 540.0,
    train_budget_s: float = 420.0,
    wheels: str | os.PathLike | None = DEFAULT_WHEELS,
    work: str | os.PathLike | None = None,
    params: str | os.PathLike = REPO_ROOT / "params.yaml",
    dry_run: bool = False,
    device: str | None = None,
    mfu: float = 0.30,
    peak_tflops: float | None = None,
    bench_max_batch: int = 256,
    bench_steps: int = 10,
    bench_warmup: int = 3,
    seed: int | None = None,
    command: str | None = None,
    parts: tuple[str, ...] | list[str] = DEFAULT_PARTS,
    probe_s: float = 5.0,
) -> int:
    """The whole campaign; returns 0 when every part finished, 1 when one failed, was cut or skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or " ".join(["python -m repro.gpu", *sys.argv[1:]])
    camp = Campaign(out, budget_s, command)
    log_file = open(out / "log.txt", "a", buffering=1)  # noqa: SIM115 - closed in finally
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(old_out, log_file), _Tee(old_err, log_file)

    fired = []  # the raise below can land where Python swallows it (a gc callback, a finaliser): remember it

    def on_alarm(signum, frame):
        fired.append(camp.elapsed())
        raise BudgetExceeded()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 1e-3))
    try:
        _campaign(camp, train_budget_s, wheels, work, params, dry_run, device, mfu, peak_tflops,
                  bench_max_batch, bench_steps, bench_warmup, seed, parts, probe_s)  # fmt: skip
        camp.record["status"] = "done"
    except BudgetExceeded:
        camp.record["status"] = "cut"
        for entry in camp.record["parts"]:  # the timer can fire between a part's start and its own handler
            if entry["status"] == "running":
                entry["status"] = "cut"
        print(f"\nthe campaign's budget of {budget_s} s ran out after {camp.elapsed():.1f} s; what exists is saved")
    except Exception as exc:
        camp.record["status"] = "failed"
        camp.record["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        bad = [p["part"] for p in camp.record["parts"] if p["status"] != "done"]
        if camp.record["status"] == "done" and bad:
            camp.record["status"] = "cut" if fired else "incomplete"
            if fired:  # the timer's exception was swallowed where it fired; the parts after it were skipped
                print(f"\nthe campaign's budget of {budget_s} s ran out after {fired[0]:.1f} s; what exists is saved")
        camp.record["not_done"] = bad
        camp.save()
        print(f"campaign {camp.record['status']} in {camp.elapsed():.1f} s; outputs in {out}")
        sys.stdout, sys.stderr = old_out, old_err
        log_file.close()
    return 0 if camp.record["status"] == "done" else 1


def _campaign(camp: Campaign, train_budget_s, wheels, work, params, dry_run, device, mfu, peak_tflops,
              bench_max_batch, bench_steps, bench_warmup, seed, parts=DEFAULT_PARTS, probe_s=5.0) -> None:  # fmt: skip
    out = camp.out
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="repro-small-"))
    wheels = Path(wheels) if wheels else None
    rec = camp.record
    rec["work"] = str(work)

    with camp.part("install") as entry:
        if wheels is not None and (wheels / MANIFEST).is_file():
            entry["wheels"] = str(wheels)
            entry["installed"] = install_missing(wheels, work / "site")
            data = use_carried_data(wheels)
            entry["data_dir"] = str(data) if data else os.environ.get("REPRO_DATA_DIR")
        else:
            entry["wheels"] = None
            print(f"install: no {MANIFEST} in {wheels}; using the packages this interpreter has")
        for module in ("diffusers", "torch_fidelity", "yaml", "scipy"):
            importlib.import_module(module)
    if entry["status"] != "done":
        raise RuntimeError(f"install failed: {entry.get('error')}")

    import torch

    from .config import load_params
    from .io import atomic_write_json
    from .runtime import cpu_setup
    from .train import train

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() and not dry_run else "cpu"))
    cpu_setup(dev)
    if dry_run:
        torch.set_num_threads(DRY_TRAIN["threads"])  # tiny matrices: one thread beats two contended ones
    all_params = load_params(params)
    configs = small_configs(all_params, dry_run, seed)
    precision = configs[0].train.precision if dev.type == "cuda" else "fp32"
    if dev.type == "cuda":  # as train() sets it, so the record states what the runs use
        torch.backends.cuda.matmul.allow_tf32 = configs[0].train.tf32
    rec["provenance"] = campaign_provenance(dev, precision, configs[0].seed, camp.command, dry_run)
    rec["parts_asked"] = list(parts)
    configs = configs if "small" in parts else []
    bench_models = BENCH_MODELS if "bench" in parts else ()
    axes = [p for p in ("tokens", "long") if p in parts]
    peak = peak_tflops or (H200_BF16_TFLOPS if dev.type == "cuda" else CPU_ASSUMED_TFLOPS)
    tp = Throughput(peak, mfu, eval_overhead_s=2.0 if dev.type == "cuda" else 0.3)
    overrides = {**({"input_size": 32, "in_channels": 4, "num_classes": 1000}), **(DRY_BENCH if dry_run else {})}
    bench_batch = min(bench_max_batch, 4) if dry_run else bench_max_batch
    if dry_run:
        bench_steps, bench_warmup = 1, 0
        probe_s = min(probe_s, gpu_axes.DRY_PROBE_S)

    with camp.part("plan") as entry:
        rows = [run_plan(cfg, tp) for cfg in configs]
        rows += [bench_plan(m, bench_batch, bench_steps, bench_warmup, tp, overrides) for m in bench_models]
        rows += gpu_axes.plan_rows(all_params, dry_run, tp, axes)
        plan = {
            "device": rec["provenance"]["device"],
            "budget_s": camp.budget_s,
            "train_budget_s": train_budget_s,
            "assumptions": {
                "peak_tflops": peak,
                "mfu": mfu,
                "train_tflops": peak * mfu,
                "sample_tflops": peak * mfu * tp.sample_factor,
                "eval_overhead_s": tp.eval_overhead_s,
                "note": "peak: 8192^3 bf16 matmuls measured on an H200; sampling is fp32/TF32, half the bf16 rate"
                if dev.type == "cuda"
                else "a stated CPU rate for the dry run, not a measurement",
                "flops": "2 x MACs counted on the meta device (torch.utils.flop_counter)",
            },
            "parts": rows,
            "total_estimate_s": sum(p["estimate_s"] for p in rows),
        }
        atomic_write_json(out / "plan.json", plan)
        print(_format_plan(plan), flush=True)
        entry["total_estimate_s"] = plan["total_estimate_s"]

    # training + evaluation: each run gets a time cap from what is left of the training budget, which also
    # leaves the benchmarks twice their estimate (and 15 s) before the end of the whole budget
    parts = rows[: len(configs) + len(bench_models)]  # the small runs' and the benches' rows
    bench_reserve = 2 * sum(p["estimate_s"] for p in parts[len(configs) :]) + 15
    train_end = min(camp.elapsed() + train_budget_s, camp.budget_s - bench_reserve)
    rec["runs"] = {}
    for i, cfg in enumerate(configs):
        left = train_end - camp.elapsed()
        eval_left = sum(p["eval_s"] for p in parts[i : len(configs)])
        cap = (left - eval_left) / (len(configs) - i)
        name = f"train {cfg.run_id}"
        if cap <= 1.0:
            camp.skip(name, f"{left:.0f} s of the training budget left, {eval_left:.0f} s of evaluation still planned")
            continue
        cfg.train.max_seconds = cap
        curve_path = out / "curves" / f"{cfg.method}-s{cfg.seed}.json"
        with camp.part(name) as entry:
            entry.update({"steps_planned": cfg.train.steps, "time_cap_s": round(cap, 2)})

            def keep(curve, path=curve_path):
                atomic_write_json(path, curve)

            curve = train(cfg, work / cfg.run_id, device=str(dev), resume=False, command=camp.command, on_eval=keep)
            atomic_write_json(curve_path, curve)
            done = curve["points"][-1]["step"] if curve["points"] else 0
            entry.update({"steps_done": done, "time_capped": done < entry["steps_planned"]})
            if entry["time_capped"]:
                entry["status"] = "cut"
        log = work / cfg.run_id / "metrics.jsonl"
        if log.exists():
            rec["runs"][cfg.run_id] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        camp.save()

    # benchmarks: the largest batch up to the maximum that fits, while the budget lasts
    from .bench import format_report

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    bench: dict[str, Any] = {"units": "ms per training step (median), MFU of peak dense bf16", "models": {}}
    est = {p["part"]: p for p in parts}
    for model in bench_models:
        name = f"bench {model}"
        need = est[name]["estimate_s"] * 2 + 5
        if camp.left() < need:
            camp.skip(name, f"{camp.left():.0f} s of the budget left, about {need:.0f} s needed")
            continue
        with camp.part(name) as entry:
            rep = bench_largest_batch(model, bench_batch, bench_steps, bench_warmup, str(dev), "bf16", overrides)
            bench["models"][model] = rep
            entry["batch"] = rep["batch"]
            print(format_report(rep), flush=True)
        atomic_write_json(out / "bench.json", bench)

    if axes:  # the long horizon and the token axis: each measured, sized and run on what is left
        gpu_axes.run_parts(camp, axes, all_params, dry_run, str(dev), tp, work, probe_s)


def bench_largest_batch(model: str, max_batch: int, steps: int, warmup: int, device: str, precision: str,
                        overrides: dict, run=None) -> dict[str, Any]:  # fmt: skip
    """``repro bench`` of DiT and TREAD at the largest batch (``max_batch``, halved on out-of-memory) that fits."""
    import torch

    from .bench import run_bench

    run = run or run_bench
    tried = []
    batch = max_batch
    while batch >= 1:
        rep = None
        try:
            rep = run(model, batch, steps, warmup, device, precision, BENCH_METHODS, **overrides)
        except torch.cuda.OutOfMemoryError:
            tried.append(batch)
        if rep is not None:
            rep["out_of_memory_at"] = tried
            return rep
        # out of the except block, so the failed attempt's tensors are no longer referenced
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch //= 2
    raise RuntimeError(f"bench {model}: out of memory at every batch down to 1 (tried {tried})")


# ---------------------------------------------------------------------------------------------------------------------
# Landing a GPU campaign's outputs as the small scale's goldens

GOLDENS = REPO_ROOT / "goldens" / "small"
LANDED = ("campaign.json", "plan.json", "bench.json")


def land(out: str | os.PathLike, goldens: str | os.PathLike = GOLDENS) -> list[Path]:
    """Copy a GPU campaign's outputs into ``goldens``: ``curves/*.json`` -> ``runs/``, the record, plan and bench
    beside it. Refuses a dry run and a record that did not run on CUDA, so CPU numbers never become goldens."""
    from .io import atomic_write_bytes
    from .speedup import load_curves

    out, goldens = Path(out), Path(goldens)
    record_path = out / "campaign.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"land: {out} has no campaign.json; pass the folder given to `campaign --out`")
    try:
        record = json.loads(record_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"land: {record_path} is not valid JSON ({exc})") from None
    prov = (record.get("provenance") if isinstance(record, dict) else None) or {}
    if not isinstance(prov, dict):
        raise ValueError(f"land: {record_path}: provenance={prov!r} is not allowed; must be a mapping")
    if prov.get("dry_run") is not False or not prov.get("cuda") or str(prov.get("device", "cpu")).startswith("cpu"):
        raise ValueError(
            f"land: {record_path} is from device {prov.get('device')!r} with dry_run={prov.get('dry_run')!r}; "
            "only a GPU campaign (dry_run false, CUDA) lands as goldens"
        )
    curves = sorted((out / "curves").glob("*.json"))
    load_curves(curves)  # each checked before anything is written
    written = []
    for c in curves:
        written.append(atomic_write_bytes(goldens / "runs" / c.name, c.read_bytes()))
    if curves or (out / "bench.json").is_file():  # a call of only the long / tokens parts keeps these records
        for name in LANDED:
            if (out / name).is_file():
                written.append(atomic_write_bytes(goldens / name, (out / name).read_bytes()))
    written += land_axes(out, goldens)
    return written


def land_axes(out: Path, goldens: Path) -> list[Path]:
    """The long / tokens bundles into ``goldens/long/`` and ``goldens/tokens/``, with the call's record and plan
    beside each, and their ladders (:func:`repro.gpu_axes.land_parts`)."""
    from .io import atomic_write_bytes

    written = gpu_axes.land_parts(out, goldens, reference=REPO_ROOT / "goldens" / "micro" / "reference.json")
    for part in ("long", "tokens"):
        if (out / f"{part}.json").is_file():
            for name in ("campaign.json", "plan.json"):
                if (out / name).is_file():
                    written.append(atomic_write_bytes(goldens / part / name, (out / name).read_bytes()))
    return written


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.gpu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="download the pinned wheels and copy the data into a folder (needs a registry)")
    p.add_argument("--dest", type=Path, default=DEFAULT_WHEELS)
    p.add_argument("--no-data", action="store_true", help="wheels only")
    c = sub.add_parser("campaign", help="the small-scale GPU campaign in one call (see the module docstring)")
    c.add_argument("--out", type=Path, required=True, help="output folder (plan, campaign, curves, bench, log)")
    c.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole command")
    c.add_argument("--train-budget-s", type=float, default=420.0, help="of which training + evaluation")
    c.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="folder made by `pack` (default .whl)")
    c.add_argument("--work", type=Path, default=None, help="run folders and installed wheels (default: a temp dir)")
    c.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    c.add_argument("--dry-run", action="store_true", help="the same campaign at a tiny size on the CPU")
    c.add_argument("--device", default=None)
    c.add_argument("--mfu", type=float, default=0.30, help="assumed model FLOP utilisation, for the plan and caps")
    c.add_argument("--peak-tflops", type=float, default=None, help=f"default {H200_BF16_TFLOPS} on a GPU")
    c.add_argument("--bench-max-batch", type=int, default=256)
    c.add_argument("--seed", type=int, default=None, help="one seed for every run (default: params.yaml's)")
    c.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                   help="what runs: small (DiT/TREAD/SiT), bench, long (17.5x, scale gpu-long), tokens (256 tokens, "
                   "scale gpu-tokens); default: small bench")  # fmt: skip
    c.add_argument("--probe-s", type=float, default=5.0,
                   help="seconds of each long/tokens method's first steps that measure its step time")  # fmt: skip
    g = sub.add_parser("land", help="copy a GPU campaign's outputs into goldens/small (refuses a dry run)")
    g.add_argument("out", type=Path, help="the folder given to `campaign --out`")
    g.add_argument("--goldens", type=Path, default=GOLDENS)
    args = parser.parse_args(argv)
    if args.command == "land":
        try:
            written = land(args.out, args.goldens)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for path in written:
            print(f"landed {path}")
        return 0
    if args.command == "pack":
        if args.dest.exists() and not args.dest.is_dir():
            print(f"error: --dest: {args.dest} is a file; a folder is needed", file=sys.stderr)
            return 2
        try:
            m = pack(args.dest, data=not args.no_data)
        except subprocess.CalledProcessError as exc:
            print(f"error: pack: pip download failed (exit {exc.returncode}; no package registry?)", file=sys.stderr)
            return 2
        except (OSError, ValueError, RuntimeError) as exc:
            print(f"error: pack: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        for w in m["wheels"]:
            print(f"{w['file']:<50}{w['bytes'] / 2**20:>8.2f} MiB")
        for r in m["data"]:
            print(f"{r['file']:<50}{r['bytes'] / 2**20:>8.2f} MiB")
        print(f"{'total':<50}{m['total_bytes'] / 2**20:>8.2f} MiB in {args.dest}")
        return 0
    for name in ("budget_s", "train_budget_s", "mfu", "peak_tflops"):
        v = getattr(args, name)
        if v is None and name == "peak_tflops":
            continue
        if not (v > 0 and v < float("inf")) or (name == "mfu" and v > 1):  # also refuses nan
            allowed = {"mfu": "a number in (0, 1]", "peak_tflops": "a positive finite number of TFLOP/s"}.get(
                name, "a positive finite number of seconds"
            )
            print(f"error: --{name.replace('_', '-')}: {v} is not allowed; must be {allowed}", file=sys.stderr)
            return 2
    for option, path, kind in (("--out", args.out, "folder"), ("--params", args.params, "file")):
        if (kind == "folder" and path.exists() and not path.is_dir()) or (kind == "file" and not path.is_file()):
            why = "is a file" if kind == "folder" else "is not a file"
            print(f"error: {option}: {path} {why}; a {kind} is needed", file=sys.stderr)
            return 2
    if args.wheels is not None and (args.wheels / MANIFEST).is_file():
        try:
            check_wheels(args.wheels)  # checked before the campaign starts its clock and its outputs
        except (OSError, ValueError) as exc:
            print(f"error: --wheels: {exc}", file=sys.stderr)
            return 2
    if args.train_budget_s > args.budget_s:
        print(f"error: --train-budget-s: {args.train_budget_s} exceeds --budget-s {args.budget_s}", file=sys.stderr)
        return 2
    if not args.probe_s > 0:
        print(f"error: --probe-s: {args.probe_s} is not allowed; a positive number of seconds", file=sys.stderr)
        return 2
    if args.bench_max_batch < 1:
        print(f"error: --bench-max-batch: {args.bench_max_batch} is not allowed; must be >= 1", file=sys.stderr)
        return 2
    return run_campaign(
        args.out,
        budget_s=args.budget_s,
        train_budget_s=args.train_budget_s,
        wheels=args.wheels,
        work=args.work,
        params=args.params,
        dry_run=args.dry_run,
        device=args.device,
        mfu=args.mfu,
        peak_tflops=args.peak_tflops,
        bench_max_batch=args.bench_max_batch,
        seed=args.seed,
        parts=tuple(args.parts),
        probe_s=args.probe_s,
    )


if __name__ == "__main__":
    sys.exit(main())
