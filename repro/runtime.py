"""Process set-up shared by every entry point: the device (and torchrun's environment), CPU arithmetic settings,
and how a device is named in records."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .validation import ValidationError


def cpu_setup(device: torch.device | str | None = None, threads: int | None = None) -> None:
    """Settings for computing on the CPU; nothing happens when ``device`` is given and is not a CPU.

    Denormal floats are flushed to zero: DiT's zero-initialised adaLN gates make near-zero values whose
    denormal arithmetic slows CPUs about 30x, and flushing changes results only below 1e-38 (float32).
    ``threads`` sets torch's intra-op thread count (None keeps torch's default).
    """
    if device is not None and torch.device(device).type != "cpu":
        return
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def cpu_model() -> str | None:
    """The CPU's model as the kernel reports it (``/proc/cpuinfo``: :func:`cpu_model_from`), or None where it
    says nothing. Seconds are comparable only on one CPU model: records name it."""
    try:
        return cpu_model_from(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def cpu_model_from(cpuinfo: str) -> str | None:
    """The model name in a ``/proc/cpuinfo`` text, with the first processor's family, model and stepping where
    the text gives them (a virtual machine may name only "AMD EPYC", which spans generations whose seconds
    differ); None where it names no model."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    name = next((fields[k] for k in ("model name", "Model", "cpu model") if k in fields), None)
    ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return f"{name} ({', '.join(ids)})" if name and ids else name


def device_name(device: torch.device) -> str:
    """The device as records name it: the GPU's model, or the CPU with its model (where the kernel says) and
    thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_model()
    arch = platform.processor() or platform.machine()
    return f"cpu ({model + ', ' if model else ''}{arch}, {torch.get_num_threads()} threads)"


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
            raise ValidationError(
                f"--device: {requested!r} is not allowed; a device such as cpu, cuda or cuda:1"
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValidationError(f"--device: {requested!r} is not allowed; CUDA is not available here (use cpu)")
        if dev.type not in ("cpu", "cuda"):
            raise ValidationError(f"--device: {requested!r} is not allowed; training runs on cpu or cuda")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info()[2])
    return torch.device("cpu")


def side_by_side(jobs: int | str, threads: Sequence[int | None], scale: str, cpu: bool = True) -> int:
    """The number of runs to train side by side, checked: ``jobs``, or for ``auto`` the usable CPUs over the
    largest of the runs' ``train.threads`` (1 when a run leaves it unset: torch then takes every CPU). More
    than one at a time on the CPU needs every run's ``train.threads`` set: it is part of what a run computes."""
    if jobs == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        jobs = max(1, cpus // max(threads)) if threads and None not in threads else 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValidationError(f"--jobs: {jobs!r} is not allowed; must be a positive integer or auto")
    if jobs > 1 and cpu and None in threads:
        raise ValidationError(
            f"--jobs: {jobs} needs scales.{scale}.train.threads set (the threads of each run side by side); "
            "allowed without it: --jobs 1"
        )
    return jobs
