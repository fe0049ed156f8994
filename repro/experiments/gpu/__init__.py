"""The small-scale GPU campaign as one prepared call, and the folder of wheels and data it travels with.

Three commands (``python -m repro.experiments.gpu --help``; the parser is :mod:`repro.commands.gpu`):

``pack``
    On a machine with registry access: download the pinned wheels and copy Fashion-MNIST's files into a folder with
    ``manifest.json`` (:mod:`repro.experiments.gpu.wheels`).
``campaign``
    In one call of at most ``--budget-s`` seconds: install what is missing from that folder, plan, train the small
    scale's runs, bench, and the long-horizon / token-axis parts when asked (:mod:`repro.experiments.gpu.campaign`, the
    plan in :mod:`repro.experiments.gpu.plan`, the batch search in :mod:`repro.experiments.gpu.batch`, the long and
    token parts in :mod:`repro.experiments.gpu.axes`, the record in :mod:`repro.experiments.gpu.record`). ``--dry-run``
    runs the same code at a tiny size on the CPU (the tests run it).
``land OUT``
    Copy a GPU campaign's outputs into ``goldens/small/`` (:mod:`repro.experiments.gpu.land`); a dry run is refused.

None of these modules imports torch at import time, nor argparse.
"""

from __future__ import annotations

from .batch import BENCH_METHODS, BENCH_MODELS, bench_largest_batch
from .campaign import DEFAULT_PARTS, PARTS, CampaignOptions, run_gpu_campaign
from .land import GOLDENS, land
from .paths import DEFAULT_WHEELS, REPO_ROOT
from .plan import CPU_ASSUMED_TFLOPS, H200_BF16_TFLOPS, Throughput, run_plan, small_configs
from .record import Campaign
from .wheels import (
    DATA_SUBDIR,
    MANIFEST,
    PINS,
    check_wheels,
    copy_data,
    install_missing,
    pack,
    read_manifest,
    wheel_requirements,
)

__all__ = [
    "BENCH_METHODS",
    "BENCH_MODELS",
    "CPU_ASSUMED_TFLOPS",
    "DATA_SUBDIR",
    "DEFAULT_PARTS",
    "DEFAULT_WHEELS",
    "GOLDENS",
    "H200_BF16_TFLOPS",
    "MANIFEST",
    "PARTS",
    "PINS",
    "REPO_ROOT",
    "Campaign",
    "CampaignOptions",
    "Throughput",
    "bench_largest_batch",
    "check_wheels",
    "copy_data",
    "install_missing",
    "land",
    "pack",
    "read_manifest",
    "run_gpu_campaign",
    "run_plan",
    "small_configs",
    "wheel_requirements",
]
