"""Parameter and MAC counts, and the arithmetic behind the published speedups.

Everything is counted on the ``meta`` device with :mod:`repro.models.cost` (matrix products by
``torch.utils.flop_counter.FlopCounterMode``, MACs = FLOPs / 2). DiT's tables call MACs "Gflops"; this
module reports MACs and says so, and gives the FLOPs next to them where a published figure could mean
either.

Sections of the audit (``repro audit`` writes them to ``goldens/audit.json``):

- ``dit_sizes``: parameters and forward MACs of the twelve DiT models at 256x256 (latent 32x32x4),
  against DiT's Table 4, with the counting conventions that were tried on the entries that differ.
- ``tread_routes``: MACs of DiT-B/2 and DiT-XL/2 with and without TREAD's route at rate 0.5, for a
  forward pass and for a training step (forward and backward).
- ``adaln``: the share of DiT-XL/2's parameters held by the per-block adaLN projections, and what
  PixArt-alpha's shared adaLN-single saves.
- ``sd_vae``: the Stable Diffusion kl-f8 autoencoder's encoder and decoder at 256x256.
- ``speedups``: TREAD's 14x and 37x, REPA's 17.5x and LightningDiT's 21.8x rebuilt from the published
  points, as (iteration ratio) x (per-iteration cost ratio).

The published numbers used here are read from ``repro/evidence/published.yaml``, where each one names its paper and
table or figure; every other number is computed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import atomic_write_json
from ..models import SIZES, DiT, dit_forward_macs, meta_dit, num_params, tread_routes
from ..models.cost import ElementCounter, attention_macs, dit_train_step_macs, macs_by_op
from ..models.lightningdit import RELEASED_MODEL, lightningdit_config
from ..provenance import provenance
from ..runtime import cpu_setup
from .published import PUBLISHED

DEFAULT_OUT = Path("goldens/audit.json")

# ------------------------------------------------------------------------------------------------------------
# Published numbers: read from repro/evidence/published.yaml, where each one names its source
# ------------------------------------------------------------------------------------------------------------

# DiT's Table 4: forward "Gflops" (= GMACs) at 256x256 as printed, and parameters in millions per size.
PAPER_DIT_GMACS: dict[str, float] = dict(PUBLISHED["dit_table4"]["gmacs"])
PAPER_DIT_GMACS_DECIMALS: int = PUBLISHED["dit_table4"]["decimals"]
PAPER_DIT_PARAMS_M: dict[str, int] = dict(PUBLISHED["dit_table4"]["params_m"])

# TREAD's Figure 1: DiT-XL/2 as (thousand iterations, hours, FID), TREAD-XL/2 as (hours, FID); Table 2's FID at 400K.
DIT_XL2_POINTS: tuple[tuple[float, float, float], ...] = tuple(map(tuple, PUBLISHED["tread_figure1"]["dit_xl2"]))
TREAD_XL2_POINTS: tuple[tuple[float, float], ...] = tuple(map(tuple, PUBLISHED["tread_figure1"]["tread_xl2"]))
TREAD_XL2_FID_AT_400K: float = PUBLISHED["tread_table2"]["fid_at_400k"]
TREAD_CLAIMED: dict[str, float] = dict(PUBLISHED["tread_figure1"]["claimed"])

REPA: dict[str, float] = {k: v for k, v in PUBLISHED["repa"].items() if k != "source"}
LIGHTNINGDIT: dict[str, float] = {k: v for k, v in PUBLISHED["lightningdit"].items() if k != "source"}
DIT_RECIPE: dict[str, int] = {k: PUBLISHED["dit_recipe"][k] for k in ("kiters", "batch")}
IMAGENET_TRAIN_IMAGES: int = PUBLISHED["dit_recipe"]["imagenet_train_images"]
PIXART: dict[str, float] = {k: v for k, v in PUBLISHED["pixart"].items() if k != "source"}
REPLY_ADALN_SHARE: float = PUBLISHED["reply"]["adaln_share"]
SD_VAE_QUOTED: float = PUBLISHED["reply"]["sd_vae_gflops"]

# The Stable Diffusion kl-f8 autoencoder (diffusers' AutoencoderKL settings of its released config)
SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=256,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    act_fn="silu",
)

# ------------------------------------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------------------------------------


def printed(value: float, decimals: int) -> float:
    """``value`` as a table prints it: rounded half-up to ``decimals`` places."""
    q = Decimal(1).scaleb(-decimals)
    return float(Decimal(repr(float(value))).quantize(q, rounding=ROUND_HALF_UP))


# ------------------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------------------


def audit_dit_sizes() -> dict[str, Any]:
    """Parameters and forward MACs of the twelve DiT sizes against DiT's Table 4 (per image, 256x256)."""
    d = PAPER_DIT_GMACS_DECIMALS
    entries: dict[str, Any] = {}
    for name, paper_gmacs in PAPER_DIT_GMACS.items():
        model = meta_dit(name)
        counter = ElementCounter(model)
        by_op = dit_forward_macs(model)
        elements = counter.close()
        macs = sum(by_op.values())
        gmacs = macs / 1e9
        size = name.split("-")[1].split("/")[0]
        trainable = num_params(model, trainable_only=True)
        norm_convention = (macs + elements["norm_elements"]) / 1e9
        entries[name] = {
            "params": num_params(model),
            "trainable_params": trainable,
            "trainable_params_m": trainable / 1e6,
            "paper_params_m": PAPER_DIT_PARAMS_M[size],
            "params_match_printed": round(trainable / 1e6) == PAPER_DIT_PARAMS_M[size],
            "macs": macs,
            "gmacs": gmacs,
            "gflops": 2 * gmacs,
            "paper_gmacs": paper_gmacs,
            "gmacs_printed": printed(gmacs, d),
            "gmacs_match_printed": printed(gmacs, d) == paper_gmacs,
            "gmacs_minus_paper": gmacs - paper_gmacs,
            "diff_in_last_printed_digits": (gmacs - paper_gmacs) * 10**d,
            "rel_diff": gmacs / paper_gmacs - 1.0,
            "flops_over_paper": 2 * gmacs / paper_gmacs,
            "attention_gmacs": attention_macs(by_op) / 1e9,
            "macs_by_op": by_op,
            "norm_elements": elements["norm_elements"],
            "gmacs_plus_norm_elements": norm_convention,
            "plus_norm_elements_match_printed": printed(norm_convention, d) == paper_gmacs,
        }
    patch2 = [n for n in entries if n.endswith("/2")]
    return {
        "unit": "MACs per image, forward pass, 256x256 (latent 32x32x4); DiT's 'Gflops' are MACs",
        "entries": entries,
        "summary": {
            "entries": len(entries),
            "gmacs_match_printed": sum(e["gmacs_match_printed"] for e in entries.values()),
            "gmacs_mismatches": {
                n: [e["gmacs"], e["paper_gmacs"]] for n, e in entries.items() if not e["gmacs_match_printed"]
            },
            "max_abs_gmacs_diff": max(abs(e["gmacs_minus_paper"]) for e in entries.values()),
            "max_abs_rel_diff": max(abs(e["rel_diff"]) for e in entries.values()),
            "max_abs_diff_in_last_printed_digits": max(abs(e["diff_in_last_printed_digits"]) for e in entries.values()),
            "min_flops_over_paper": min(e["flops_over_paper"] for e in entries.values()),
            "max_flops_over_paper": max(e["flops_over_paper"] for e in entries.values()),
            "plus_norm_elements_match_printed": sum(e["plus_norm_elements_match_printed"] for e in entries.values()),
            "plus_norm_elements_mismatches": [
                n for n, e in entries.items() if not e["plus_norm_elements_match_printed"]
            ],
            "params_note": "trainable parameters (the frozen sin-cos table left out), in millions as printed; "
            "the paper gives one count per size, which the patch-2 models match",
            "patch2_params_match_printed": sum(entries[n]["params_match_printed"] for n in patch2),
            "patch2_models": len(patch2),
            "params_match_printed": sum(e["params_match_printed"] for e in entries.values()),
            "min_attention_share": min(e["attention_gmacs"] / e["gmacs"] for e in entries.values()),
        },
    }


def audit_tread_routes(rate: float = 0.5) -> dict[str, Any]:
    """MACs of TREAD's official route on DiT-B/2 (2->8) and DiT-XL/2 (2->24), forward and training step."""
    out: dict[str, Any] = {"unit": "MACs per image", "rate": rate}
    for name in ("DiT-B/2", "DiT-XL/2"):
        depth = SIZES[name.split("-")[1].split("/")[0]]["depth"]
        routes = tread_routes(depth, rate)
        dense, routed = meta_dit(name), meta_dit(name, routes=routes)
        fwd_dense = sum(dit_forward_macs(dense).values())
        fwd_routed = sum(dit_forward_macs(routed, routed=True).values())
        step_dense = sum(dit_train_step_macs(dense).values())
        step_routed = sum(dit_train_step_macs(routed).values())
        r = routes[0]
        out[name] = {
            "route": {
                "start": r.start,
                "end": r.end,
                "rate": r.rate,
                "kept_tokens": r.num_kept(dense.config.num_tokens),
                "tokens": dense.config.num_tokens,
            },
            "params_dense": num_params(dense),
            "params_routed": num_params(routed),
            "forward": _saving(fwd_dense, fwd_routed),
            "train_step": _saving(step_dense, step_routed),
            "train_step_over_forward_dense": step_dense / fwd_dense,
        }
    return out


def _saving(dense: int, routed: int) -> dict[str, Any]:
    return {
        "dense_macs": dense,
        "routed_macs": routed,
        "dense_gmacs": dense / 1e9,
        "routed_gmacs": routed / 1e9,
        "dense_over_routed": dense / routed,
        "saving": 1.0 - routed / dense,
    }


def audit_adaln() -> dict[str, Any]:
    """Parameters in per-block adaLN projections of DiT-XL/2, and the saving of shared adaLN-single."""
    model = meta_dit("DiT-XL/2")
    total = num_params(model, trainable_only=True)
    per_block = sum(num_params(b.adaLN_modulation) for b in model.blocks)
    final = num_params(model.final_layer.adaLN_modulation)
    single = meta_dit("DiT-XL/2", conditioning="adaln-single")
    total_single = num_params(single, trainable_only=True)
    saving = total - total_single
    pix_total = PIXART["per_block_params_m"] * 1e6
    pix_saving = (PIXART["per_block_params_m"] - PIXART["single_params_m"]) * 1e6
    return {
        "unit": "trainable parameters (the frozen sin-cos table left out)",
        "model": "DiT-XL/2",
        "params": total,
        "per_block_adaln_params": per_block,
        "final_layer_adaln_params": final,
        "per_block_share": per_block / total,
        "all_adaln_share": (per_block + final) / total,
        "adaln_single_params": total_single,
        "adaln_single_shared_and_tables": num_params(single.t_block)
        + sum(b.scale_shift_table.numel() for b in single.blocks),
        "adaln_single_saving": saving,
        "adaln_single_saving_share": saving / total,
        "reply_claimed_share": REPLY_ADALN_SHARE,
        "pixart": {
            "note": "PixArt-alpha has DiT-XL/2's width and depth plus cross-attention, hence a larger total",
            "published_per_block_params": int(pix_total),
            "published_single_params": int(PIXART["single_params_m"] * 1e6),
            "per_block_adaln_share_of_published_total": per_block / pix_total,
            "published_saving": int(pix_saving),
            "published_saving_share": pix_saving / pix_total,
            "counted_saving_over_published": saving / pix_saving,
            "claimed_share": PIXART["claimed_share"],
            "claimed_saving": PIXART["claimed_saving"],
        },
    }


def build_sd_vae() -> nn.Module:
    """The Stable Diffusion kl-f8 autoencoder (diffusers ``AutoencoderKL``) on the meta device, no weights."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**SD_VAE_CONFIG)


def audit_sd_vae(image_size: int = 256) -> dict[str, Any]:
    """Encoder (with quant_conv) and decoder (with post_quant_conv) MACs and parameters for one image."""
    vae = build_sd_vae()
    latent = image_size // 8
    parts = {
        "encoder": (nn.Sequential(vae.encoder, vae.quant_conv), (1, 3, image_size, image_size)),
        "decoder": (nn.Sequential(vae.post_quant_conv, vae.decoder), (1, 4, latent, latent)),
    }
    out: dict[str, Any] = {"unit": "MACs per image", "image_size": image_size, "config": _jsonable(SD_VAE_CONFIG)}
    for part, (module, shape) in parts.items():
        x = torch.empty(*shape, device="meta")
        counter = ElementCounter(module)
        with torch.no_grad():
            by_op = macs_by_op(lambda m=module, x=x: m(x))
        elements = counter.close()
        macs = sum(by_op.values())
        attn = attention_macs(by_op)
        out[part] = {
            "params": num_params(module),
            "macs": macs,
            "gmacs": macs / 1e9,
            "attention_gmacs": attn / 1e9,
            "gmacs_without_attention_products": (macs - attn) / 1e9,
            "macs_by_op": by_op,
            **elements,
            # one op per conv bias add, per normalised element and per activation, none for q k^T and a v
            "gops_elementwise_convention": (macs - attn + sum(elements.values())) / 1e9,
        }
    enc, dec = out["encoder"], out["decoder"]
    total = enc["gmacs"] + dec["gmacs"]
    conv = enc["gops_elementwise_convention"] + dec["gops_elementwise_convention"]
    dit = sum(dit_forward_macs(meta_dit("DiT-XL/2")).values()) / 1e9
    out["total"] = {
        "params": enc["params"] + dec["params"],
        "gmacs": total,
        "gflops": 2 * total,
        "gmacs_without_attention_products": enc["gmacs_without_attention_products"]
        + dec["gmacs_without_attention_products"],
        "gops_elementwise_convention": conv,
        "quoted": SD_VAE_QUOTED,
        "gmacs_over_quoted": total / SD_VAE_QUOTED,
        "gflops_over_quoted": 2 * total / SD_VAE_QUOTED,
        "elementwise_convention_printed": printed(conv, 2),
    }
    out["context"] = {
        "dit_xl2_forward_gmacs": dit,
        "decoder_over_dit_xl2_forward": dec["gmacs"] / dit,
        "encoder_over_dit_xl2_train_step": enc["gmacs"] / (3 * dit),
        "decoder_share_of_250_step_guided_sampling": dec["gmacs"] / (dec["gmacs"] + 250 * 2 * dit),
        "note": "a DiT-XL/2 training step taken as 3 forward passes (the counted ratio is in tread_routes); "
        "guided sampling runs the model on a doubled batch",
    }
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


# ------------------------------------------------------------------------------------------------------------
# Speedup arithmetic
# ------------------------------------------------------------------------------------------------------------


def _cost_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """Cost at which a published curve of (cost, FID) points first reaches ``target`` FID or better (``None``: never),
    by the same rule as the golden runs' (:func:`repro.evidence.speedup.first_crossing`)."""
    from .speedup import first_crossing

    costs, fids = zip(*sorted(points))
    return first_crossing(costs, fids, target)


def _hours_per_kiter(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope through the origin of hours against thousand iterations."""
    return sum(k * h for k, h in points) / sum(k * k for k, _ in points)


def rebuild_tread_speedup(
    target_fid: float,
    dit_kiters: float,
    dit_hours: float,
    tread_hours_per_kiter: float,
    dit_hours_per_kiter: float,
    step_mac_ratio: float,
) -> dict[str, Any]:
    """One of TREAD's speedups: hours ratio from the figure, and iteration ratio times a per-iteration cost ratio."""
    tread_hours = _cost_to_reach(TREAD_XL2_POINTS, target_fid)
    nearest = min(TREAD_XL2_POINTS, key=lambda p: abs(p[1] - target_fid))
    if tread_hours is None:
        return {"target_fid": target_fid, "reached": False}
    tread_kiters = tread_hours / tread_hours_per_kiter
    iteration_ratio = dit_kiters / tread_kiters
    return {
        "target_fid": target_fid,
        "reached": True,
        "dit_kiters": dit_kiters,
        "dit_hours": dit_hours,
        "tread_hours": tread_hours,
        "tread_kiters": tread_kiters,
        "hours_ratio": dit_hours / tread_hours,
        "nearest_point": {"hours": nearest[0], "fid": nearest[1], "hours_ratio": dit_hours / nearest[0]},
        "iteration_ratio": iteration_ratio,
        "figure_cost_ratio": dit_hours_per_kiter / tread_hours_per_kiter,
        "iteration_ratio_x_figure_cost_ratio": iteration_ratio * dit_hours_per_kiter / tread_hours_per_kiter,
        "counted_step_mac_ratio": step_mac_ratio,
        "iteration_ratio_x_counted_mac_ratio": iteration_ratio * step_mac_ratio,
    }


def audit_speedups(tread: Mapping[str, Any], lightning_gmacs: float, dit_gmacs: float) -> dict[str, Any]:
    """Rebuild the published speedups. ``tread`` is the ``tread_routes`` section (for the counted MAC ratio)."""
    dit_hpk = _hours_per_kiter([(k, h) for k, h, _ in DIT_XL2_POINTS])
    # TREAD's hours per thousand iterations: its 400K model (FID 7.38) is the figure's point with the closest FID
    anchor = min(TREAD_XL2_POINTS, key=lambda p: abs(p[1] - TREAD_XL2_FID_AT_400K))
    tread_hpk = anchor[0] / 400
    xl = tread["DiT-XL/2"]
    mac_ratio = xl["train_step"]["dense_over_routed"]
    (k400, h400, f400), (k_mid, h_mid, f_mid), (k7m, h7m, f7m) = DIT_XL2_POINTS
    common = dict(tread_hours_per_kiter=tread_hpk, dit_hours_per_kiter=dit_hpk, step_mac_ratio=mac_ratio)
    dit_reaches_tread_400k = _cost_to_reach([(k, f) for k, _, f in DIT_XL2_POINTS], TREAD_XL2_FID_AT_400K)
    dit_epochs = DIT_RECIPE["kiters"] * 1000 * DIT_RECIPE["batch"] / IMAGENET_TRAIN_IMAGES
    return {
        "unit": "ratio of costs to reach the same FID (hours on A100s read from TREAD's Figure 1, or iterations)",
        "calibration": {
            "dit_hours_per_kiter": dit_hpk,
            "tread_hours_per_kiter": tread_hpk,
            "tread_anchor_point": {
                "hours": anchor[0],
                "fid": anchor[1],
                "kiters": 400,
                "fid_at_400k": TREAD_XL2_FID_AT_400K,
            },
            "figure_cost_ratio": dit_hpk / tread_hpk,
            "counted_forward_mac_ratio": xl["forward"]["dense_over_routed"],
            "counted_step_mac_ratio": mac_ratio,
        },
        "tread_37x": {"claimed": TREAD_CLAIMED["at_dit_final"], **rebuild_tread_speedup(f7m, k7m, h7m, **common)},
        "tread_14x": {
            "claimed": TREAD_CLAIMED["at_dit_third"],
            "anchor_2352k": rebuild_tread_speedup(f_mid, k_mid, h_mid, **common),
            "anchor_400k": rebuild_tread_speedup(f400, k400, h400, **common),
            "dit_reaches_tread_400k_fid": dit_reaches_tread_400k is not None,
            "dit_best_fid": min(f for _, _, f in DIT_XL2_POINTS),
        },
        "repa_17x": {
            "claimed": REPA["claimed"],
            "iteration_ratio": REPA["sit_kiters"] / REPA["repa_kiters"],
            "repa_fid_below_sit": REPA["repa_fid"] < REPA["sit_fid"],
            "unit": "iterations (the frozen encoder REPA runs every step is not in the ratio)",
        },
        "lightningdit_21x": {
            "claimed": LIGHTNINGDIT["claimed"],
            "epoch_ratio": LIGHTNINGDIT["dit_epochs"] / LIGHTNINGDIT["lightningdit_epochs"],
            "dit_recipe_epochs": dit_epochs,
            "fid_gap": LIGHTNINGDIT["lightningdit_fid"] - LIGHTNINGDIT["dit_fid"],
            "lightningdit_xl1_gmacs": lightning_gmacs,
            "dit_xl2_gmacs": dit_gmacs,
            "per_image_mac_ratio": dit_gmacs / lightning_gmacs,
            "unit": "epochs (images seen); LightningDiT-XL/1 on a 16x16x32 latent costs about what DiT-XL/2 does",
        },
    }


def lightningdit_xl1() -> DiT:
    """The released LightningDiT-XL/1 (its configs' model options: RMSNorm with weights, SwiGLU, sin-cos + RoPE, no
    qk-norm, adaLN with shift), patch 1 on 16x16x32 VA-VAE latents, predicting the velocity alone; on the meta
    device."""
    with torch.device("meta"):
        return DiT(lightningdit_config(**RELEASED_MODEL))


# ------------------------------------------------------------------------------------------------------------
# The whole audit, files and command line
# ------------------------------------------------------------------------------------------------------------


def run_audit() -> dict[str, Any]:
    cpu_setup()
    sizes = audit_dit_sizes()
    tread = audit_tread_routes()
    lightning = sum(dit_forward_macs(lightningdit_xl1()).values()) / 1e9
    return {
        "dit_sizes": sizes,
        "tread_routes": tread,
        "adaln": audit_adaln(),
        "sd_vae": audit_sd_vae(),
        "speedups": audit_speedups(tread, lightning, sizes["entries"]["DiT-XL/2"]["gmacs"]),
    }


def audit_provenance(command: str, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """The audit's provenance; ``out``, the file being written, does not count as an uncommitted change (DVC
    removes a stage's outputs before it runs, so the audit's own file is always missing from the tree then)."""
    import diffusers

    paths = (".",) if out is None else (".", f":(exclude){os.path.relpath(Path(out).resolve(), _repo_root())}")
    prov = provenance(
        command,
        device="meta (shapes only, no weights); counter torch.utils.flop_counter.FlopCounterMode",
        commit_paths=paths,  # dirty: uncommitted changes to any tracked file but the audit's own
        diffusers=diffusers.__version__,
        host=platform.machine(),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    commit = prov["git_commit"]
    prov["git_commit"] = None if commit is None else commit.removesuffix("+dirty")
    prov["git_dirty"] = None if commit is None else commit.endswith("+dirty")
    return prov


def write_audit(audit: Mapping[str, Any], path: str | os.PathLike, command: str) -> Path:
    """Write the audit with its provenance, atomically (temp file + rename)."""
    return atomic_write_json(path, {"provenance": audit_provenance(command, path), **audit})


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def load_audit(path: str | os.PathLike = DEFAULT_OUT) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def diff_audits(old: Any, new: Any, path: str = "", rel_tol: float = 1e-9) -> list[str]:
    """Paths where two audits differ (numbers compared with ``rel_tol``); provenance is ignored."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted((set(old) | set(new)) - ({"provenance"} if not path else set()))
        return [d for k in keys for d in diff_audits(old.get(k), new.get(k), f"{path}.{k}".lstrip("."), rel_tol)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in diff_audits(a, b, f"{path}[{i}]", rel_tol)]
    both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if both_numbers and math.isclose(old, new, rel_tol=rel_tol, abs_tol=1e-12):
        return []
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def summary_lines(audit: Mapping[str, Any]) -> list[str]:
    s = audit["dit_sizes"]
    lines = [
        "DiT sizes (forward GMACs per image at 256x256; DiT's 'Gflops' are MACs):",
        f"  {'model':<9} {'params':>10} {'paper':>6} {'GMACs':>10} {'paper':>7}  printed match",
    ]
    for name, e in s["entries"].items():
        lines.append(
            f"  {name:<9} {e['trainable_params_m']:>9.2f}M {e['paper_params_m']:>5}M {e['gmacs']:>10.4f} "
            f"{e['paper_gmacs']:>7.2f}  {'yes' if e['gmacs_match_printed'] else 'no'}"
        )
    sm = s["summary"]
    lines.append(
        f"  {sm['gmacs_match_printed']}/{sm['entries']} entries match at printed precision; "
        f"largest difference {sm['max_abs_gmacs_diff']:.4f} GMACs "
        f"({sm['max_abs_diff_in_last_printed_digits']:.2f} units of the last printed digit)"
    )
    for name in ("DiT-B/2", "DiT-XL/2"):
        t = audit["tread_routes"][name]
        r = t["route"]
        lines.append(
            f"TREAD {name} route {r['start']}->{r['end']} rate {r['rate']}: forward "
            f"{t['forward']['dense_gmacs']:.2f} -> {t['forward']['routed_gmacs']:.2f} GMACs "
            f"({t['forward']['dense_over_routed']:.3f}x), training step {t['train_step']['dense_gmacs']:.2f}"
            f" -> {t['train_step']['routed_gmacs']:.2f} GMACs ({t['train_step']['dense_over_routed']:.3f}x)"
        )
    a = audit["adaln"]
    lines.append(
        f"adaLN: per-block projections hold {a['per_block_share']:.2%} of DiT-XL/2's parameters; adaLN-single "
        f"saves {a['adaln_single_saving'] / 1e6:.1f}M ({a['adaln_single_saving_share']:.2%})"
    )
    v = audit["sd_vae"]
    lines.append(
        f"SD-VAE at 256x256: encoder {v['encoder']['gmacs']:.2f} GMACs / {v['encoder']['params'] / 1e6:.2f}M, "
        f"decoder {v['decoder']['gmacs']:.2f} GMACs / {v['decoder']['params'] / 1e6:.2f}M, total "
        f"{v['total']['gmacs']:.2f} GMACs = {v['total']['gflops']:.2f} GFLOPs (quoted {SD_VAE_QUOTED})"
    )
    sp = audit["speedups"]
    t37, t14 = sp["tread_37x"], sp["tread_14x"]
    lines.append(
        f"TREAD 37x: {t37['hours_ratio']:.1f}x in figure hours, {t37['iteration_ratio']:.1f}x iterations x "
        f"{t37['counted_step_mac_ratio']:.3f} counted MAC ratio "
        f"= {t37['iteration_ratio_x_counted_mac_ratio']:.1f}x"
    )
    for key in ("anchor_2352k", "anchor_400k"):
        r = t14[key]
        lines.append(
            f"TREAD 14x, {key}: {r['hours_ratio']:.2f}x in figure hours, "
            f"{r['iteration_ratio_x_counted_mac_ratio']:.2f}x as iterations x counted MACs"
        )
    lines.append(
        f"REPA: {sp['repa_17x']['iteration_ratio']:.2f}x iterations; LightningDiT: "
        f"{sp['lightningdit_21x']['epoch_ratio']:.3f}x epochs"
    )
    return lines
