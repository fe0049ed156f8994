"""The plots: metric against cost per run, and the speedup ladder against TREAD's published one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...io import atomic_path
from .cost import first_crossing
from .curves import UNIT_LABELS, _check_metric, _check_unit, _group, _points, _series

# One colour per method, the same in every plot whichever methods share it: an index into matplotlib's tab20 (a
# method and its run on EDM share a hue, dark and light). A method not listed here takes a free index, in name
# order within its plot; give each new method its entry (a test checks that every method of params.yaml has one).
METHOD_COLORS: dict[str, int] = {
    "dit": 0,
    "dit-edm": 1,
    "tread": 2,
    "tread-edm": 3,
    "sit": 4,
    "sit-tread": 5,
    "stochastic-depth": 6,
    "post-norm": 8,
    "lightningdit": 10,
    "tread-rate-25": 16,
    "tread-rate-75": 17,
    "tread-xavier": 18,
    "dit-dispersive": 12,
    "dit-sra": 14,
}


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """The colour of each method: :data:`METHOD_COLORS`' (tab20), or a free tab20 colour for a method it lacks."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    free = [i for i in range(cmap.N) if i not in set(METHOD_COLORS.values())]
    unknown = sorted({m for m in methods if m not in METHOD_COLORS})
    if len(unknown) > len(free):
        raise ValueError(
            f"{len(unknown)} methods without an entry in METHOD_COLORS in one plot; at most {len(free)} free colours"
        )
    index = {**METHOD_COLORS, **dict(zip(unknown, free))}
    return {m: cmap(index[m]) for m in methods}


def plot_curves(
    curves: Sequence[Mapping[str, Any]],
    unit: str,
    path: str | os.PathLike,
    metric: str = "fid",
    targets: Mapping[str, float] | None = None,
) -> Path:
    """PNG of ``metric`` against cost (log x axis; log y for the validation loss), every run drawn, one color per
    method; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    _check_unit(unit)
    _check_metric(metric)
    by_method = _group(curves)
    colors = method_colors(sorted(by_method))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        for method in sorted(by_method):
            for j, curve in enumerate(by_method[method]):
                c, m = _series(_points(curve), unit, metric)
                ax.plot(
                    c,
                    m,
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    alpha=0.85,
                    color=colors[method],
                    label=method if j == 0 else None,
                )
        for name, value in (targets or {}).items():
            ax.axhline(value, color="0.5", linestyle="--", linewidth=0.8)
            ax.annotate(
                f"target {name}",
                xy=(0.005, value),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="0.35",
                va="bottom",
            )
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        if hi / lo > 10:  # labels on minor ticks collide once the axis spans more than a decade
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{UNIT_LABELS[unit]} (log scale)")
        if metric == "val_loss":  # it falls 20x from the first evaluation: on a linear axis the late curves merge
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(metric.upper() if metric != "val_loss" else "validation loss (log scale)")
        scales = sorted({str(c.get("scale")) for c in curves})
        ax.set_title(f"{metric} vs {unit}" + (f" ({', '.join(scales)})" if scales != ["None"] else ""))
        ax.grid(True, which="both", alpha=0.3)
        many = len(by_method) > 6  # the campaign with its ablations: two columns, smaller type
        ax.legend(title="method", ncol=2 if many else 1, fontsize=7 if many else None)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def published_tread_ladder() -> list[tuple[float, float]]:
    """TREAD's Figure 1 as a ladder: ``(DiT's training length / its 400K point, hours ratio)`` at each of DiT-XL/2's
    published points (about 3.8x at 1x, 13.5x at 5.9x, 36.6x at 17.5x), each crossing found as the golden runs' are."""
    from ..published import PUBLISHED

    fig = PUBLISHED["tread_figure1"]
    hours, fids = zip(*sorted((h, f) for h, f in fig["tread_xl2"]))
    first_kiters = fig["dit_xl2"][0][0]
    out = []
    for kiters, dit_hours, fid in fig["dit_xl2"]:
        tread_hours = first_crossing(hours, fids, fid)
        if tread_hours is not None:
            out.append((kiters / first_kiters, dit_hours / tread_hours))
    return out


def plot_ladder(
    report: Mapping[str, Any], path: str | os.PathLike, unit: str = "macs", start: str | None = None
) -> Path:
    """PNG of each method's speedup at every rung of the ladder against the baseline's training length (the rung's
    step over ``start``'s, the first growth pair's start by default), log-log, with its 95% interval where one is
    printed (a bound: a hollow marker), and TREAD's published ladder for reference; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ladder = report["targets"].get("ladder") or {}
    if start is None:
        pairs = [k.split(":")[0] for g in (report.get("growth") or {}).values() for k in g]
        start = pairs[0] if pairs else next(iter(ladder), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        methods = sorted(report["unit_results"])
        colors = method_colors(methods)
        base = float(start) if start is not None and start.replace(".", "", 1).isdigit() else 1.0
        for method in methods:
            xs, ys, lo, hi, bound = [], [], [], [], []
            for rung in ladder:
                r = report["unit_results"][method]["ladder"][rung].get(unit)
                if not r or r.get("ratio") is None:
                    continue
                xs.append(float(rung) / base)
                ys.append(r["ratio"])
                lo.append(r["ci_low"] if r.get("ci_low") is not None else r["ratio"])
                hi.append(r["ci_high"] if r.get("ci_high") is not None else r["ratio"])
                bound.append(r.get("ratio_is") != "estimate")
            if not xs:
                continue
            ys_a, lo_a, hi_a = np.asarray(ys), np.asarray(lo), np.asarray(hi)
            ax.errorbar(xs, ys, yerr=[ys_a - lo_a, hi_a - ys_a], color=colors[method], linewidth=1.2, capsize=2,
                        label=method)  # fmt: skip
            ax.scatter([x for x, b in zip(xs, bound) if b], [y for y, b in zip(ys, bound) if b], facecolors="white",
                       edgecolors=[colors[method]], zorder=3, s=18)  # fmt: skip
        pub = published_tread_ladder()
        ax.plot(*zip(*pub), "k--", marker="x", label="TREAD's Figure 1 (A100-hours, ImageNet-256)")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"baseline's training length (its step / {start})" if start else "baseline's step")
        ax.set_ylabel(f"speedup to the baseline's value there ({UNIT_LABELS[unit]})")
        scale = report.get("scale") or ""
        ax.set_title(f"speedup ladder over {report['baseline']} ({report['metric']}{', ' + scale if scale else ''})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
