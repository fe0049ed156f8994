"""The campaign's benchmarks: ``repro bench`` of DiT and TREAD at the largest batch that fits on the device."""

from __future__ import annotations

import gc
from typing import Any

BENCH_MODELS = ("DiT-S/2", "DiT-B/2", "DiT-XL/2")
BENCH_METHODS = ("dit", "tread")
BENCH_SIZE = {"input_size": 32, "in_channels": 4, "num_classes": 1000}  # 256 tokens of DiT's latents, patch 2
DRY_BENCH = {"input_size": 8, "in_channels": 4, "num_classes": 10, "hidden_size": 32, "num_heads": 2}


def bench_largest_batch(model: str, max_batch: int, steps: int, warmup: int, device: str, precision: str,
                        overrides: dict, run=None) -> dict[str, Any]:  # fmt: skip
    """``repro bench`` of DiT and TREAD at the largest batch (``max_batch``, halved on out-of-memory) that fits."""
    import torch

    from ..bench import run_bench

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
