"""The folder of wheels and data the GPU campaign travels with: gathered by ``pack`` on a machine with a package
registry, checked and installed (offline, from the folder only) by the campaign on the machine without one.

``pack`` downloads the pinned wheels (Python 3.12, pure Python or manylinux x86_64) of what a CUDA image with its
own torch lacks, copies Fashion-MNIST's four IDX files (their payloads checked against
:mod:`repro.data.fashion_mnist`'s pins) and writes ``manifest.json`` (file, sha256, bytes, the module each wheel
provides). Default folder: ``.whl``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from ...provenance import git_commit, sha256_file
from .paths import DEFAULT_WHEELS

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

    from ...data import fashion_mnist as fm

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
    from ...io import atomic_write_json

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
        "made_by": "python -m repro.experiments.gpu pack",
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
            f"--wheels: {folder} has no {MANIFEST}; make the folder with `python -m repro.experiments.gpu pack`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); make the folder again with `python -m repro.experiments.gpu pack`"
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
    from ...data import fashion_mnist

    fashion_mnist.clear_cache()
    return data
