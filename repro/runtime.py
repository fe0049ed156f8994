"""Process set-up shared by every entry point: CPU arithmetic settings and how a device is named in records."""

from __future__ import annotations

import platform

import torch


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


def device_name(device: torch.device) -> str:
    """The device as records name it: the GPU's model, or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
