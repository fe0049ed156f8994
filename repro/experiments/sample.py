"""``repro sample``: samples of a trained run (or one checkpoint) as one ADM-format ``.npz``, on one process or
under torchrun (DiT's ``sample_ddp.py`` workflow: 50,000 samples for FID-50K).

The source is a run directory (``config.json`` and ``checkpoints/last.pt``), a checkpoint file of a run
(its ``config.json`` found beside it, or named by ``--config``), or an official DiT checkpoint: a released
state dict (``DiT-XL-2-256x256.pt``) or a checkpoint of DiT's ``train.py`` (read weights-only; sampled with
DiT's recipe unless ``--config`` names another). The EMA weights are used unless ``--weights model``. The
sampler is the run's objective; ``--steps`` and ``--cfg-scale`` default to the run's evaluation settings.

Which samples: sample ``i`` has label ``i % num_classes`` (class-balanced) and starting noise from its own
generator seeded by ``(--seed, i)``; batch ``b`` (samples ``b * B .. (b + 1) * B - 1``, ``B = --batch-size``)
draws its sampler noise from a generator seeded by ``(--seed, b)``. The set is a function of the seed and the
batch size only: under torchrun each rank takes the batches ``b = rank, rank + world, ...``, so 1 or 64 GPUs
give the same samples. Each finished batch is written at once to ``OUT.parts/`` (atomic), so a preempted job
re-run with the same command skips the batches it has; the last rank to finish a batch set assembles them.

Latent models (in_channels 4, trained on SD-VAE latents) are decoded through the VAE that encoded the run's
latents (its ``manifest.json`` names it and its config; ``--vae`` names another folder, whose config must be the
same), as DiT decodes: ``vae.decode(z / 0.18215)``, then ``clamp(127.5 x + 128, 0, 255)`` truncated to uint8.
The float latents are kept beside the images in ``OUT.latents.npz`` (``latents``, ``labels``).

The ``.npz`` is ADM's sample batch: ``arr_0`` uint8 ``(N, H, W, C)`` (RGB for decoded latents), ``arr_1``
the int64 labels (as ADM's samplers store them), and ``provenance`` (a JSON string: source, checkpoint and
its sha256, step, weights, sampler settings, seed, batch size, world size, VAE, torch/CUDA, device, commit).
``repro evaluate OUT --reference VIRTUAL_imagenet256_labeled.npz`` scores it, as does ADM's own evaluator.
Beside it, a PNG grid of the first ``--grid`` samples. By default everything is written under the run
directory (``RUN/samples/<checkpoint>-<weights>-<steps>steps-cfg<scale>-n<N>-seed<seed>.npz``), never in the
current directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHTS = ("ema", "model")
SEED_STRIDE = 1_000_003
PLAN = "plan.json"


# ------------------------------------------------------------------------------------------
# Sources: a run, a run's checkpoint, an official DiT checkpoint
# ------------------------------------------------------------------------------------------


def find_checkpoint(source: str | Path, config: str | Path | None = None) -> tuple[Path, Path | None]:
    """``(checkpoint, config.json)`` of a run directory or a checkpoint file; the config is None when none is
    found beside a checkpoint file (an official DiT checkpoint needs none; a run's checkpoint does)."""
    source = Path(source)
    if source.is_dir():
        ckpt = source / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise ValueError(f"source: {source} has no checkpoints/last.pt; allowed: a run directory or a .pt file")
        candidates = [source / "config.json"]
    elif source.is_file():
        ckpt = source
        candidates = [source.parent.parent / "config.json", source.parent / "config.json"]
    else:
        raise ValueError(f"source: {source} does not exist; allowed: a run directory or a checkpoint file")
    if config is not None:
        if not Path(config).is_file():
            raise ValueError(f"config: {config} does not exist; pass --config RUN/config.json")
        return ckpt, Path(config)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and source.is_dir():
        raise ValueError(f"config: none of {', '.join(map(str, candidates))} exists; pass --config RUN/config.json")
    return ckpt, found


def _read_repro_checkpoint(ckpt_path: Path):
    """A checkpoint of ``repro train`` (or None when the file is of another layout)."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return ckpt if isinstance(ckpt, dict) and "config" in ckpt else None


def _read_run_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, with its ``model`` and ``objective`` sections: a one-line error naming the file."""
    try:
        run = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"config: {path} is not valid JSON ({e})") from None
    if not isinstance(run, dict):
        raise ValueError(f"config: {path} holds a {type(run).__name__}; must be a run's config.json (a JSON object)")
    for key in ("model", "objective"):
        if not isinstance(run.get(key), dict):
            raise ValueError(f"config: {path}: {key} is missing or not a mapping; must be a run's config.json")
    return run


def _check_same_model(ckpt_path: Path, model: dict[str, Any], config_path: Path, run: dict[str, Any]) -> None:
    """The checkpoint's model is the run's (the same fields as ``config.json``'s ``model``): a checkpoint of another
    model placed in a run directory would otherwise be sampled and labelled with that run's id."""
    from .rundir import config_differences, plain

    stored = {k: v for k, v in plain(run["model"]).items() if k in model}  # fields a newer config adds are not checked
    differ = config_differences(plain(model), stored)
    if differ:
        shown = ", ".join(f"{k}: {_dig(model, k)!r} vs {_dig(run['model'], k)!r}" for k in differ[:4])
        raise ValueError(
            f"checkpoint: {ckpt_path} is of another model than {config_path} ({shown}); allowed: the run's own "
            "checkpoint, or --config with the config.json of the run that wrote it"
        )


def _dig(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key, "missing") if isinstance(data, dict) else "missing"
    return data


def load_for_sampling(
    ckpt_path: Path, config_path: Path | None, weights: str = "ema", device: str | torch.device = "cpu"
):
    """``(model, objective, run config dict, checkpoint step)`` with ``weights`` loaded strictly.

    A checkpoint of ``repro train`` needs its run's ``config.json``; an official DiT checkpoint (see
    :func:`repro.models.convert.load_official_checkpoint`) is sampled with DiT's recipe (DDPM, 250 steps, no
    guidance) unless ``config_path`` gives a run configuration."""
    from ..models import DiT, DiTConfig
    from ..objectives import make_objective

    if weights not in WEIGHTS:
        raise ValueError(f"weights: {weights!r}; allowed: {', '.join(WEIGHTS)}")
    ckpt_path = Path(ckpt_path)
    ckpt = _read_repro_checkpoint(ckpt_path) if ckpt_path.is_file() else None
    if ckpt is not None:
        if config_path is None:
            raise ValueError(f"config: no config.json beside {ckpt_path}; pass --config RUN/config.json")
        if weights not in ckpt:
            raise ValueError(
                f"checkpoint: {ckpt_path} has no {weights!r} weights (holds {sorted(ckpt)}); try --weights model"
            )
        run = _read_run_config(config_path)
        _check_same_model(ckpt_path, ckpt["config"], config_path, run)
        model = DiT(DiTConfig(**ckpt["config"]))
        model.load_state_dict(ckpt[weights], strict=True)
        step = ckpt.get("step")
    else:
        from ..models.convert import load_official_checkpoint

        try:
            cfg, state, info = load_official_checkpoint(ckpt_path, weights)
        except ValueError as e:
            if "cannot be read" in str(e):
                raise ValueError(
                    f"checkpoint: {ckpt_path} cannot be read (not a torch file, truncated, or holding objects other "
                    "than tensors and plain data); allowed: a checkpoint written by repro train or an official DiT "
                    "checkpoint"
                ) from None
            raise
        model = DiT(cfg)
        model.load_state_dict(state, strict=True)
        if config_path is not None:
            run = _read_run_config(config_path)
        else:
            run = {
                "run_id": None,
                "model": cfg.to_dict(),
                "objective": {"name": "ddpm", "learn_sigma": cfg.learn_sigma},
                "eval": {"sample_steps": 250, "guidance_scale": 1.0},
            }
        run["official_checkpoint"] = info
        step = int(ckpt_path.stem) if info["layout"] == "dit-train" and ckpt_path.stem.isdigit() else None
    model = model.to(device).eval()
    objective = make_objective(**run["objective"])
    return model, objective, run, step


def is_latent_model(run: dict[str, Any], model) -> bool:
    """Whether the model's outputs are SD-VAE latents (decoded before scoring) rather than pixels."""
    data = run.get("data") or {}
    if data.get("name") == "latents":
        return True
    return "official_checkpoint" in run and model.config.in_channels == 4


# ------------------------------------------------------------------------------------------
# Drawing: the set depends on the seed and the batch size, never on the world size
# ------------------------------------------------------------------------------------------


def noise_seed(seed: int, index: int) -> int:
    """Seed of sample ``index``'s starting noise."""
    return 2 * (seed * SEED_STRIDE + index)


def batch_seed(seed: int, batch: int) -> int:
    """Seed of batch ``batch``'s sampler noise (odd: never a noise seed)."""
    return 2 * (seed * SEED_STRIDE + batch) + 1


@torch.no_grad()
def draw_batch(
    model,
    objective,
    seed: int,
    start: int,
    stop: int,
    batch: int,
    steps: int | None,
    guidance_scale: float,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``start..stop-1`` (float32, on CPU) and their labels, batch ``batch`` of the set."""
    cfg = model.config
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    noise = torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed(seed, i))) for i in range(start, stop)]
    )
    labels = torch.arange(start, stop) % cfg.num_classes
    workers = torch.get_num_threads() if torch.device(device).type == "cpu" and not compile else 1
    x = objective.sample(
        model,
        noise.to(device),
        labels.to(device),
        steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(batch_seed(seed, batch)),
        compile=compile,
        workers=workers,
    )
    return x.float().cpu(), labels


@torch.no_grad()
def draw(
    model,
    objective,
    num: int,
    seed: int,
    steps: int | None = None,
    guidance_scale: float = 1.0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` samples in [-1, 1] (float32, on CPU) and their labels, noise from one generator seeded by ``seed``
    and batch ``i``'s sampler noise from ``seed + 1 + i``: the scheme of ``python -m repro.experiments.fidnoise``, whose
    committed numbers it reproduces (``repro sample`` draws by sample index instead: see the module docstring).

    On a CPU each forward runs on slices of the batch in parallel one-thread workers, one per thread of the
    process (bitwise the same samples); ``compile`` runs it through ``torch.compile`` instead (the same draws,
    samples within float rounding; worth its compilation only for many samples)."""
    cfg = model.config
    workers = torch.get_num_threads() if torch.device(device).type == "cpu" and not compile else 1
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(num, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    labels = torch.arange(num) % cfg.num_classes
    out = []
    for i in range(0, num, batch_size):
        sg = torch.Generator(device="cpu").manual_seed(seed + 1 + i)
        x = objective.sample(
            model,
            noise[i : i + batch_size].to(device),
            labels[i : i + batch_size].to(device),
            steps=steps,
            guidance_scale=guidance_scale,
            generator=sg,
            compile=compile,
            workers=workers,
        )
        out.append(x.float().cpu())
    return torch.cat(out), labels


# ------------------------------------------------------------------------------------------
# Decoding latents through the run's VAE
# ------------------------------------------------------------------------------------------


def _vae_config(config: dict) -> dict:
    """A VAE config as compared: the public fields (diffusers' ``_name_or_path`` and versions left out)."""
    from ..data.latents import _jsonable

    return {k: _jsonable(v) for k, v in dict(config).items() if not str(k).startswith("_")}


def _weights_sha256(folder: Path) -> str | None:
    """sha256 over a diffusers folder's weight files (names and bytes), or None when it has none."""
    import hashlib

    from ..provenance import sha256_file

    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt"))
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(folder)}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


class Decoder:
    """Model outputs -> uint8 NHWC images: pixels as they are (``[-1, 1]`` rounded), latents through the VAE."""

    def __init__(self, run: dict[str, Any], latent: bool, vae: str | None, device: torch.device):
        self.latent, self.device, self.vae, self.info = latent, device, None, {"kind": "pixels"}
        if not latent:
            if vae is not None:
                raise ValueError("--vae: the run trains on pixels; a VAE decodes latent models only")
            return
        from ..data.latents import MANIFEST, SD_VAE_SCALE, load_vae, manifest_sha256

        data = run.get("data") or {}
        manifest_path = Path(data["path"]) / MANIFEST if data.get("path") else None
        manifest = (
            json.loads(manifest_path.read_text()) if manifest_path is not None and manifest_path.is_file() else None
        )
        source = vae or (manifest or {}).get("vae", {}).get("source")
        if not source:
            where = f"{manifest_path} names none" if manifest_path is not None else "the checkpoint names none"
            raise ValueError(f"--vae: a latent model is decoded through its VAE and {where}; pass --vae DIR")
        self.vae = load_vae(source, device=device)
        if manifest is not None:
            want, got = _vae_config(manifest["vae"]["config"]), _vae_config(self.vae.config)
            differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            if differ:
                raise ValueError(
                    f"--vae {source}: its config differs from the VAE that encoded {data['path']} in {differ[:5]}; "
                    "decode with the same VAE"
                )
        self.scale = float(manifest["scale"]) if manifest is not None else SD_VAE_SCALE
        folder = Path(source).expanduser()
        self.info = {
            "kind": "sd-vae",
            "source": str(source),
            "weights_sha256": _weights_sha256(folder) if folder.is_dir() else None,
            "scale": self.scale,
            "conversion": "vae.decode(z / scale), clamp(127.5 x + 128, 0, 255), truncated to uint8 (DiT)",
            "latents_manifest_sha256": manifest_sha256(manifest_path.parent) if manifest is not None else None,
        }

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if not self.latent:
            from ..metrics.grid import to_uint8

            return np.ascontiguousarray(to_uint8(x).transpose(0, 2, 3, 1))
        param = next(self.vae.parameters())
        images = self.vae.decode(x.to(device=param.device, dtype=param.dtype) / self.scale).sample
        images = torch.clamp(127.5 * images.float() + 128.0, 0, 255).permute(0, 2, 3, 1)
        return images.to("cpu", dtype=torch.uint8).numpy()


# ------------------------------------------------------------------------------------------
# The set: batches written as parts, then assembled into one ADM .npz
# ------------------------------------------------------------------------------------------


def _part_path(parts: Path, b: int) -> Path:
    return parts / f"batch-{b:06d}.npz"


def _read_part(path: Path, count: int) -> dict[str, np.ndarray] | None:
    """A finished batch (None when it is missing or damaged: it is then drawn again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            part = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if len(part.get("images", ())) != count or len(part.get("labels", ())) != count:
        return None
    return part


def _write_part(path: Path, part: dict[str, np.ndarray]) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **part)


def _write_npz_member(z: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with z.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def assemble(parts: Path, out: Path, num: int, batch_size: int, provenance: dict[str, Any], latent: bool) -> None:
    """The parts as one ADM ``.npz`` (``arr_0``, ``arr_1``, ``provenance``; written atomically, streamed through a
    memory-mapped ``.npy`` so 50,000 images never sit in memory) and, for latents, ``OUT.latents.npz``."""
    from ..io import atomic_path

    batches = math.ceil(num / batch_size)
    first = _read_part(_part_path(parts, 0), min(batch_size, num))
    images = np.lib.format.open_memmap(
        parts / "arr_0.npy", mode="w+", dtype=np.uint8, shape=(num, *first["images"].shape[1:])
    )
    labels = np.empty(num, dtype=np.int64)
    latents = np.empty((num, *first["latents"].shape[1:]), dtype=np.float32) if latent else None
    for b in range(batches):
        start, stop = b * batch_size, min(num, (b + 1) * batch_size)
        part = first if b == 0 else _read_part(_part_path(parts, b), stop - start)
        if part is None:
            raise ValueError(f"{_part_path(parts, b)}: missing or damaged; run the same command again to draw it")
        images[start:stop], labels[start:stop] = part["images"], part["labels"]
        if latents is not None:
            latents[start:stop] = part["latents"]
    images.flush()
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            z.write(parts / "arr_0.npy", arcname="arr_0.npy")
            _write_npz_member(z, "arr_1", labels)
            _write_npz_member(z, "provenance", np.array(json.dumps(provenance, sort_keys=True)))
    del images
    if latents is not None:
        with atomic_path(latents_path(out)) as tmp, open(tmp, "wb") as f:
            np.savez(f, latents=latents, labels=labels)


def latents_path(out: Path) -> Path:
    return out.with_name(out.name[: -len(".npz")] + ".latents.npz")


def default_out(source: Path, ckpt: Path, weights: str, steps: int, scale: float, num: int, seed: int) -> Path:
    """``RUN/samples/<checkpoint>-<weights>-<steps>steps-cfg<scale>-n<N>-seed<seed>.npz`` (for a checkpoint file
    outside a run, a ``samples`` folder beside it)."""
    if source.is_dir():
        home = source
    elif ckpt.parent.name == "checkpoints" and (ckpt.parent.parent / "config.json").is_file():
        home = ckpt.parent.parent
    else:
        home = ckpt.parent
    return home / "samples" / f"{ckpt.stem}-{weights}-{steps}steps-cfg{scale:g}-n{num}-seed{seed}.npz"


def sample_set(
    model,
    objective,
    decoder: Decoder,
    out: Path,
    *,
    num: int,
    seed: int,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    device: torch.device,
    rank: int,
    world: int,
    plan: dict[str, Any],
    provenance: dict[str, Any],
    compile: bool = False,
    say=print,
) -> bool:
    """Draw this rank's batches into ``OUT.parts/`` (skipping finished ones), then rank 0 assembles the set.
    Returns whether this process wrote the ``.npz``."""
    import torch.distributed as dist

    parts = out.with_name(out.name + ".parts")
    problem = [None]
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        plan_path = parts / PLAN
        foreign = sorted(p.name for p in parts.iterdir() if not _ours(p.name)) if parts.is_dir() else []
        if foreign:
            problem[0] = (
                f"{parts}: holds files repro sample did not write ({', '.join(foreign[:3])}); it is the folder of "
                "this --out's batches: move them or give another --out"
            )
        elif plan_path.is_file():
            old = json.loads(plan_path.read_text())
            if old != json.loads(json.dumps(plan)):
                differ = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
                problem[0] = (
                    f"{parts}: holds the batches of another sampling (differs in {differ}); remove it or give "
                    "another --out"
                )
        else:
            from ..io import atomic_write_json

            atomic_write_json(plan_path, plan)
    if world > 1:
        dist.broadcast_object_list(problem, src=0)  # every rank stops, not only rank 0
    if problem[0] is not None:
        raise ValueError(problem[0])
    batches = math.ceil(num / batch_size)
    mine = range(rank, batches, world)
    done = 0
    for b in mine:
        start, stop = b * batch_size, min(num, (b + 1) * batch_size)
        path = _part_path(parts, b)
        if _read_part(path, stop - start) is not None:
            done += 1
            continue
        x, labels = draw_batch(model, objective, seed, start, stop, b, steps, guidance_scale, device, compile)
        part = {"images": decoder(x), "labels": labels.numpy().astype(np.int64)}
        if decoder.latent:
            part["latents"] = x.numpy().astype(np.float32)
        _write_part(path, part)
        done += 1
        say(f"rank {rank}: batch {b + 1} of {batches} ({stop} of {num} samples)")
    if world > 1:
        dist.barrier()
    if rank != 0:
        return False
    assemble(parts, out, num, batch_size, provenance, decoder.latent)
    for path in parts.iterdir():  # what this command wrote there, and nothing else
        if _ours(path.name) and path.is_file():
            path.unlink()
    with contextlib.suppress(OSError):
        parts.rmdir()
    return True


_PART_FILE = re.compile(r"^(batch-\d{6}\.npz|arr_0\.npy|plan\.json|\..+\.[A-Za-z0-9_]{8}\.tmp)$")


def _ours(name: str) -> bool:
    """Whether a file in ``OUT.parts/`` is one that sampling writes (a batch, the plan, the assembled images, or a
    temporary file of an interrupted atomic write)."""
    return bool(_PART_FILE.match(name))


def check_samples_out(out: Path) -> None:
    """``--out`` may be replaced only when it does not exist or is a sample set that ``repro sample`` wrote (it has
    a ``provenance`` member): an ADM reference batch or another ``.npz`` given by mistake is never overwritten."""
    if not out.exists():
        return
    try:
        with zipfile.ZipFile(out) as z:
            ours = "provenance.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        ours = False
    if not ours:
        raise ValueError(
            f"--out {str(out)!r} exists and is not a sample set written by repro sample (no provenance member); "
            "allowed: a new file or one repro sample wrote"
        )
