"""Sessions: ``tests`` (default), ``quick`` (the tests not marked slow), ``lint``, ``property`` (the property tests
on a few hundred random examples each), ``mutation`` (the declared breaks of tests/mutants.yaml, each must be caught),
``repro`` (the CPU micro scale through DVC) and ``gpu_repro``.

All sessions share one environment (``.venv`` beside this file, or ``$REPRO_ENV``): torch alone is
several GB, so building it once per session would waste minutes and disk. The environment is
(re)installed with pip when ``pyproject.toml`` or the torch pin changes. Set ``REPRO_TORCH`` to the
torch requirement your machine needs (for example a CUDA build on a cluster), or to ``none`` to use
whatever torch ``$REPRO_ENV`` already has; a new environment is then made with
``--system-site-packages`` from ``$REPRO_PYTHON`` (default: the interpreter running nox), so it sees
that interpreter's torch, CUDA build included. ``REPRO_ENV=system`` uses ``$REPRO_PYTHON``'s own
environment instead of making one (needed where that interpreter is itself a virtual environment,
whose packages a ``--system-site-packages`` child would not see).

Without a package registry (a GPU machine whose image brings torch): set ``REPRO_WHEELS`` to a folder
made by ``python -m repro.experiments.gpu pack``. pip then installs with ``--no-index --find-links $REPRO_WHEELS``
and no build isolation, the package without its dev tools (dvc, nox and ruff are not carried), and the
data is read from ``$REPRO_WHEELS/data`` unless ``REPRO_DATA_DIR`` is set::

    REPRO_ENV=system REPRO_PYTHON=python3 REPRO_TORCH=none REPRO_WHEELS=.whl nox -s gpu_repro
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]

ROOT = Path(__file__).resolve().parent
ENV = Path(os.environ.get("REPRO_ENV", ROOT / ".venv"))
TORCH = os.environ.get("REPRO_TORCH", "torch==2.14.1 torchvision==0.29.1")
WHEELS = os.environ.get("REPRO_WHEELS")  # a folder of wheels: install from it alone, no registry
PYTHON = os.environ.get("REPRO_PYTHON", sys.executable)


def _env(session: nox.Session) -> Path:
    """The shared environment's bin folder, created and installed on first use."""
    bin_dir = ENV / "bin"
    python = bin_dir / "python"
    stamp = ENV / ".repro-installed"
    own_torch = TORCH.strip().lower() == "none"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode() + (WHEELS or "").encode()).hexdigest()
    if str(ENV) == "system":  # the interpreter's own environment: nothing is created, the package goes into it
        python = Path(shutil.which(PYTHON) or PYTHON)
        bin_dir, stamp = python.parent, ROOT / ".nox" / "repro-system-installed"
        stamp.parent.mkdir(exist_ok=True)
    elif not python.exists():
        session.run(PYTHON, "-m", "venv", *(["--system-site-packages"] if own_torch else []), str(ENV), external=True)
    if not stamp.exists() or stamp.read_text() != want:
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        if WHEELS:
            wheels = str(Path(WHEELS).resolve())
            pip += ["--no-index", "--find-links", wheels, "--no-build-isolation"]
        if not own_torch:
            session.run(*pip, *TORCH.split(), external=True)
        session.run(*pip, "-e", str(ROOT) if WHEELS else f"{ROOT}[dev]", external=True)
        stamp.write_text(want)
    if WHEELS and (Path(WHEELS) / "data").is_dir() and not os.environ.get("REPRO_DATA_DIR"):
        session.env["REPRO_DATA_DIR"] = str((Path(WHEELS) / "data").resolve())
    session.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    if str(ENV) != "system":
        session.env["VIRTUAL_ENV"] = str(ENV)
    return bin_dir


def _data(session: nox.Session, bin_dir: Path) -> None:
    """Fashion-MNIST where the package looks for it ($REPRO_DATA_DIR, Debian's folder, the download cache): when
    it is in none of them and this runs as root on Debian/Ubuntu, Debian's package is installed (offline-friendly,
    the same files the pinned sha256 check accepts); otherwise the loader downloads and checks it on first use, or
    says in one line how to get it."""
    probe = "from repro.data.fashion_mnist import find_data_dir as f; f(download=False)"
    found = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True).returncode == 0
    if found or os.environ.get("REPRO_DATA_DIR"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        session.log("Fashion-MNIST not found: installing Debian's dataset-fashion-mnist")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], env=env, check=False)
    else:
        session.log(
            "Fashion-MNIST not found on this machine: the first use downloads it (checked against its sha256); "
            "offline, install Debian's dataset-fashion-mnist or set REPRO_DATA_DIR"
        )


def _workers(bin_dir: Path) -> list[str]:
    """pytest-xdist's arguments: ``$REPRO_TEST_WORKERS`` workers (default ``auto``, one per core; ``0`` runs in this
    process), each test file on one worker (``--dist loadfile``: a module's fixtures, the calibration's simulated
    campaigns among them, are built once). Nothing where pytest-xdist is not installed (a GPU machine's wheels)."""
    workers = os.environ.get("REPRO_TEST_WORKERS", "auto")
    has = subprocess.run([str(bin_dir / "python"), "-c", "import xdist"], capture_output=True).returncode == 0
    return ["-n", workers, "--dist", "loadfile"] if has and workers != "0" else []


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Lint, then the whole test suite with the derandomized hypothesis profile ``ci`` (the same examples on every
    run, so a red run is reproducible; plain ``pytest`` draws fresh random examples instead)."""
    bin_dir = _env(session)
    _data(session, bin_dir)
    session.env["HYPOTHESIS_PROFILE"] = "ci"
    session.run(str(bin_dir / "ruff"), "check", "repro", "tests", "noxfile.py", external=True)
    session.run(str(bin_dir / "python"), "-m", "pytest", *_workers(bin_dir), *session.posargs, external=True)


@nox.session(venv_backend="none")
def quick(session: nox.Session) -> None:
    """The contributor's loop: lint, then the tests not marked ``slow`` (``pytest -m "not slow"``, about 2 minutes
    on 2 cores), with the same derandomized hypothesis profile ``ci`` as ``tests``. Arguments go to pytest
    (``-- -k routing``). ``nox -s tests`` (and CI) still runs every test."""
    bin_dir = _env(session)
    _data(session, bin_dir)
    session.env["HYPOTHESIS_PROFILE"] = "ci"
    session.run(str(bin_dir / "ruff"), "check", "repro", "tests", "noxfile.py", external=True)
    session.run(
        str(bin_dir / "python"), "-m", "pytest", "-m", "not slow", *_workers(bin_dir), *session.posargs, external=True
    )


@nox.session(name="property", venv_backend="none")
def property_tests(session: nox.Session) -> None:
    """The property tests (those with ``@given``: hypothesis marks them ``hypothesis``) on fresh random examples,
    300 each (hypothesis profile ``thorough``, tests/conftest.py). Arguments go to pytest (``-- -k routing``)."""
    bin_dir = _env(session)
    session.env["HYPOTHESIS_PROFILE"] = "thorough"
    session.run(str(bin_dir / "python"), "-m", "pytest", "-m", "hypothesis", *session.posargs, external=True)


@nox.session(venv_backend="none")
def mutation(session: nox.Session) -> None:
    """Break the code in each declared way (tests/mutants.yaml) in a scratch copy and check that the tests listed
    for the break fail; fails if a break is not caught. Arguments go to tests/mutation.py (``-- --only ID``)."""
    bin_dir = _env(session)
    session.run(str(bin_dir / "python"), str(ROOT / "tests" / "mutation.py"), *session.posargs, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    bin_dir = _env(session)
    session.run(str(bin_dir / "ruff"), "check", "repro", "tests", "noxfile.py", external=True)
    session.run(str(bin_dir / "ruff"), "format", "--check", "repro", "tests", "noxfile.py", external=True)


def _recheck():
    """repro/experiments/recheck.py, the main job's declared subset (stdlib only, so nox's own interpreter reads it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("repro_recheck", ROOT / "repro" / "experiments" / "recheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@nox.session(venv_backend="none")
def repro(session: nox.Session) -> None:
    """The main job on the CPU micro scale: re-check the committed campaign, or (``-- --full``) re-run it.

    Default: re-train the declared subset (repro/experiments/recheck.py: a run per code path, each to its golden's
    second evaluation) and compare it with the committed goldens point by point (tolerance for the same CPU type), a
    line per run started and finished and the largest gap of each comparison; then recompute
    the speedups, the ledger and the summary from the committed curves and check that they equal the
    committed files. ``-- --full``: every training run of the campaign afresh (``repro campaign --all``,
    as many side by side as the CPUs hold at the scale's ``train.threads``), then the same downstream
    stages, and each new curve against the golden it replaced. Other arguments go to ``repro rerun`` (for
    example ``--rel-tol 0.05`` on another CPU), or with ``--full`` to ``repro campaign``.
    """
    import shutil
    import tempfile

    bin_dir = _env(session)
    _data(session, bin_dir)
    session.env["HYPOTHESIS_PROFILE"] = "ci"  # the ledger's structure checks run pytest: the CI examples, reproducibly
    repro_cli, dvc = str(bin_dir / "repro"), str(bin_dir / "dvc")
    args = list(session.posargs)
    golden = ROOT / "goldens" / "micro" / "runs"
    if "--full" in args:
        args.remove("--full")
        snapshot = Path(tempfile.mkdtemp(prefix="repro-goldens-"))
        shutil.copytree(golden, snapshot / "runs")
        session.run(repro_cli, "campaign", "--scale", "micro", "--all", *args, external=True)
        session.log("re-run curves against the goldens they replaced:")
        session.run(repro_cli, "compare", str(golden), str(snapshot / "runs"), external=True)
        return
    import time

    started = time.monotonic()
    recheck = _recheck()
    members = recheck.MEMBERS["micro"]
    session.log(
        f"re-checking {len(members)} runs (seed {recheck.SEED}, {recheck.POINTS} evaluations each), one per "
        "code path (repro/experiments/recheck.py); `nox -s repro -- --full` re-runs the whole campaign:"
    )
    for method, why in members.items():
        session.log(f"  {method}: {why}")
    session.run(
        repro_cli, "rerun", "--scale", "micro", "--methods", *members, "--seeds", str(recheck.SEED),
        "--points", str(recheck.POINTS), "--jobs", "auto", "--out", "runs/micro-recheck", "--rel-tol", "1e-3",
        "--abs-tol", "1e-4", *args, external=True,
    )  # fmt: skip
    downstream = session.run(  # the stages that read the curves, as repro campaign re-runs them
        str(bin_dir / "python"), "-c",
        "from pathlib import Path; from repro.experiments.campaign import downstream_stages as d; "
        "print(*(n for n, _ in d(Path('.'), 'micro')))",
        external=True, silent=True,
    ).split()  # fmt: skip
    lock = ROOT / "dvc.lock"
    lock_before = lock.read_bytes()
    for stage in downstream:  # from the committed curves; --single-item: never the training stages upstream
        session.run(dvc, "repro", "--single-item", "--force", stage, external=True)
    lock.write_bytes(lock_before)  # a check, not a new result: the lock stays as it was (DVC rewrote it)
    if (ROOT / ".git").exists():
        session.run("git", "reset", "-q", "--", "dvc.lock", external=True, silent=True)  # undo DVC's autostage
        changed = session.run(
            "git", "status", "--porcelain", "--", "goldens", "reports", external=True, silent=True
        ).splitlines()  # fmt: skip
        differ = []
        for line in changed:
            path = line[3:].strip()
            if _same_but_provenance(path):  # only the record of when it was made (the git commit) moved
                session.run("git", "checkout", "HEAD", "--", path, external=True, silent=True)
            else:
                differ.append(line)
        if differ:
            listed = "\n".join(differ)
            session.error(f"the recomputed speedups, ledger or summary differ from the committed files:\n{listed}")
        session.log("speedups, ledger and summary recomputed from the committed curves: equal to the committed files")
    session.log(f"main job done in {(time.monotonic() - started) / 60:.1f} minutes")


def _same_but_provenance(path: str) -> bool:
    """Whether a changed JSON file equals its committed version once both drop their ``provenance``."""
    import json
    import subprocess

    if not path.endswith(".json") or not (ROOT / path).is_file():
        return False
    committed = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True)
    if committed.returncode != 0:
        return False

    def strip(doc):
        return {k: v for k, v in doc.items() if k != "provenance"} if isinstance(doc, dict) else doc

    return strip(json.loads(committed.stdout)) == strip(json.loads((ROOT / path).read_text()))


@nox.session(venv_backend="none")
def gpu_repro(session: nox.Session) -> None:
    """Re-run the small-scale GPU golden runs and compare each new curve with its golden (pass/fail per run).

    Without CUDA it skips with a message, or fails when ``REQUIRE_GPU=1``. Arguments go to ``repro rerun``.
    The whole prepared campaign (runs, curves, benchmarks, provenance, in one budgeted call) is
    ``python -m repro.experiments.gpu campaign --out DIR``; this session re-runs the committed curves only.
    """
    bin_dir = _env(session)
    python = str(bin_dir / "python")
    cuda = (
        session.run(python, "-c", "import torch; print(int(torch.cuda.is_available()))", external=True, silent=True)
        .strip()
        .endswith("1")
    )
    if not cuda:
        message = "gpu_repro: no CUDA device on this machine; the small-scale golden runs need one GPU"
        if os.environ.get("REQUIRE_GPU") == "1":
            session.error(message)
        session.skip(message)
    session.run(str(bin_dir / "repro"), "rerun", "--scale", "small", *session.posargs, external=True)
