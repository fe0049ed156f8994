"""The official LightningDiT as options of the one DiT class: its state_dicts load strictly and give its outputs.

The official code cannot be imported here; what it produced is pinned under tests/data/ (see the JSON notes there
for the commit and how): ``lightningdit_keys.json`` (state_dict key names and shapes of every released size and of
every switch combination) and ``lightningdit_reference.pt`` (a tiny model's weights, inputs and outputs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from repro.build import resolve
from repro.config import load_params
from repro.models import DiT, DiTConfig
from repro.models.layers import swiglu_width
from repro.models.lightningdit import (
    LIGHTNINGDIT_MODELS,
    RELEASED_OPTIONS,
    convert_lightningdit_state_dict,
    lightningdit_config,
    lightningdit_options,
    load_lightningdit,
)

DATA = Path(__file__).parent / "data"
KEYS = json.loads((DATA / "lightningdit_keys.json").read_text())
REFERENCE = torch.load(DATA / "lightningdit_reference.pt", weights_only=True)
ROPE_KEYS = ("feat_rope.freqs_cos", "feat_rope.freqs_sin")


def official_shapes(entry: dict) -> dict[str, tuple[int, ...]]:
    """The pinned official state_dict: every key with its shape."""
    shapes = {k: tuple(v) for k, v in entry["keys"].items()}
    for i in range(entry["depth"]):
        shapes.update({f"blocks.{i}.{k}": tuple(v) for k, v in entry["block_keys"].items()})
    return shapes


def entry_id(entry: dict) -> str:
    switches = "".join(str(int(entry["kwargs"].get(k, False))) for k in (*RELEASED_OPTIONS, "learn_sigma"))
    return f"{entry['name']}-{switches}"


def official_to_ours(key: str) -> str:
    return key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")


# ------------------------------------------------------------------------------------------------------------
# (a) the official key names and shapes load strictly
# ------------------------------------------------------------------------------------------------------------


def test_the_key_table_covers_every_released_size_and_switch():
    names = {e["name"] for e in KEYS["entries"]}
    assert names == set(LIGHTNINGDIT_MODELS)
    b2 = [e for e in KEYS["entries"] if e["name"] == "LightningDiT-B/2"]
    combos = {tuple(e["kwargs"][k] for k in RELEASED_OPTIONS) for e in b2}
    assert len(combos) == 32


@pytest.mark.parametrize("entry", KEYS["entries"], ids=entry_id)
def test_official_state_dict_loads_strictly(entry):
    shapes = official_shapes(entry)
    assert len(shapes) == entry["num_entries"]
    cfg = lightningdit_config(entry["name"], **entry["kwargs"])
    with torch.device("meta"):
        model = DiT(cfg)
    official = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted = convert_lightningdit_state_dict(official, cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert {official_to_ours(k) for k in shapes if k not in ROPE_KEYS} == set(ours)
    model.load_state_dict(converted, strict=True, assign=True)
    rope = sum(torch.Size(shapes[k]).numel() for k in ROPE_KEYS if k in shapes)
    assert sum(v.numel() for v in model.state_dict().values()) == entry["numel"] - rope


# ------------------------------------------------------------------------------------------------------------
# (b) outputs of the official model
# ------------------------------------------------------------------------------------------------------------


def loaded(case: dict) -> DiT:
    return load_lightningdit(case["state_dict"], **case["kwargs"]).eval()


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_outputs_equal_the_official_model(name):
    case = REFERENCE["cases"][name]
    with torch.no_grad():
        out = loaded(case)(REFERENCE["x"], REFERENCE["t"], REFERENCE["y"])
    # The one difference in arithmetic is the RoPE tables: the official ones are computed in float32, ours in
    # float64 and rounded, <= 6e-8 apart on this 4x4 grid (3e-6 on DiT's 16x16). On this CPU the outputs (values
    # up to 8) differ by <= 4.3e-6 with RoPE and not at all without (the no-rope case); 1e-5 leaves room for
    # another CPU's float32 kernels, and is far below what a wrong option moves (qk-norm on/off, a missing norm
    # weight or shift, the SwiGLU width: changes of order 1).
    torch.testing.assert_close(out, case["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_with_the_official_rope_tables_the_arithmetic_is_the_official(name):
    case = REFERENCE["cases"][name]
    model = loaded(case)
    if model.rope_cos is not None:
        model.rope_cos.copy_(case["state_dict"]["feat_rope.freqs_cos"])
        model.rope_sin.copy_(case["state_dict"]["feat_rope.freqs_sin"])
    with torch.no_grad():
        out = model(REFERENCE["x"], REFERENCE["t"], REFERENCE["y"])
        exact = model.double()(REFERENCE["x"].double(), REFERENCE["t"].double(), REFERENCE["y"])
    # Bitwise equal on the CPU that made the reference. Another CPU's float32 kernels sum in another order: the
    # bound is then this CPU's own float32 rounding of the same arithmetic (against float64), measured, with room
    # for the reference CPU's (one without AVX-512 differed by up to 4e-6 on outputs up to 8, about four ulps); a
    # wrong option moves the outputs by order 1.
    rounding = (out.double() - exact).abs().max().item()
    gap = (out - case["output"]).abs().max().item()
    assert gap <= max(1e-6, 4 * rounding), f"{name}: {gap:.3g} from the official output, rounding {rounding:.3g}"


@pytest.mark.parametrize("name", sorted(REFERENCE["cases"]))
def test_seeded_initialisation_is_the_official_one(name):
    """The same modules in the same order: after ``torch.manual_seed(0)`` both classes draw the same weights."""
    case = REFERENCE["cases"][name]
    torch.manual_seed(0)
    model = DiT(lightningdit_config(**case["kwargs"]))
    ours = model.state_dict()
    h = hashlib.sha256()
    for key in case["state_dict"]:
        if key not in ROPE_KEYS:
            h.update(key.encode())
            h.update(ours[official_to_ours(key)].float().contiguous().numpy().tobytes())
    assert h.hexdigest() == case["init_sha256"]


def test_each_official_switch_changes_the_output():
    """The reference cases differ in one switch at a time, and each moves the output by far more than rounding."""
    out = {name: case["output"] for name, case in REFERENCE["cases"].items()}
    for a, b in [("released", "qknorm"), ("qknorm", "qknorm-wo-shift"), ("qknorm", "layernorm-qknorm")]:
        assert (out[a] - out[b]).abs().max() > 0.1


# ------------------------------------------------------------------------------------------------------------
# The options themselves
# ------------------------------------------------------------------------------------------------------------


def tiny(**kw) -> DiTConfig:
    base = dict(input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    return DiTConfig(**{**base, **kw})


def test_released_config_maps_to_the_official_values():
    cfg = lightningdit_config("LightningDiT-XL/1", input_size=16, **RELEASED_OPTIONS)
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.in_channels) == (28, 1152, 16, 1, 32)
    assert (cfg.norm, cfg.mlp, cfg.pos_embed, cfg.qk_norm, cfg.adaln_shift) == (
        "rmsnorm-affine",
        "swiglu-lightningdit",
        "sincos+rope",
        False,
        True,
    )
    assert not cfg.learn_sigma and not cfg.discard_sigma
    assert lightningdit_config(learn_sigma=True).discard_sigma  # the official forward drops the variance half
    assert lightningdit_config(use_qknorm=True).qk_norm_eps == 1e-5  # nn.LayerNorm's default
    assert lightningdit_config(use_qknorm=True, use_rmsnorm=True).qk_norm_eps == 1e-6  # its RMSNorm's


def test_lightningdit_config_rejects_unknown_arguments():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['use_swish'\]"):
        lightningdit_config(use_swish=True)
    with pytest.raises(ValueError, match="unknown name 'LightningDiT-S/2'"):
        lightningdit_config("LightningDiT-S/2")
    with pytest.raises(ValueError, match=r"\['depth'\] are set by the name"):
        lightningdit_config("LightningDiT-B/2", depth=4)


def test_converter_checks_the_rope_tables():
    case = REFERENCE["cases"]["released"]
    cfg = lightningdit_config(**case["kwargs"])
    sd = dict(case["state_dict"])
    bad = dict(sd, **{"feat_rope.freqs_cos": sd["feat_rope.freqs_cos"].roll(1, 0)})
    with pytest.raises(ValueError, match="feat_rope.freqs_cos differs from the config's RoPE table"):
        convert_lightningdit_state_dict(bad, cfg)
    with pytest.raises(ValueError, match="has shape"):
        convert_lightningdit_state_dict(sd, cfg.replace(num_heads=4))
    without = {k: v for k, v in sd.items() if k not in ROPE_KEYS}
    with pytest.raises(ValueError, match="has no feat_rope"):
        convert_lightningdit_state_dict(without, cfg)
    with pytest.raises(ValueError, match="holds RoPE tables"):
        convert_lightningdit_state_dict(sd, cfg.replace(pos_embed="sincos"))


def test_the_first_ablations_values_keep_their_meaning():
    """``norm: rmsnorm`` has no weights, ``pos_embed: rope`` no additive table, ``mlp: swiglu`` the rounded width."""
    model = DiT(tiny(norm="rmsnorm", mlp="swiglu", pos_embed="rope", qk_norm=True))
    keys = set(model.state_dict())
    assert "pos_embed" not in keys and model.pos_embed is None and model.rope_cos is not None
    assert not any("norm1" in k or "norm2" in k or "norm_final" in k for k in keys)
    assert "blocks.0.attn.q_norm.weight" in keys
    assert model.blocks[0].mlp.fc2.in_features == swiglu_width(128, "ceil8") == 88
    assert model.blocks[0].adaLN_modulation[-1].out_features == 6 * 32


def test_official_values_build_the_official_modules():
    model = DiT(tiny(norm="rmsnorm-affine", mlp="swiglu-lightningdit", pos_embed="sincos+rope", adaln_shift=False))
    keys = set(model.state_dict())
    assert {"pos_embed", "blocks.0.norm1.weight", "blocks.0.norm2.weight", "final_layer.norm_final.weight"} <= keys
    assert model.rope_cos is not None and not model.pos_embed.requires_grad
    assert torch.equal(model.blocks[0].norm1.weight, torch.ones(32))
    assert model.blocks[0].mlp.fc2.in_features == int(2 / 3 * 128) == 85
    assert model.blocks[0].adaLN_modulation[-1].out_features == 4 * 32
    assert model.final_layer.adaLN_modulation[-1].out_features == 2 * 32  # the final layer keeps its shift


def test_swiglu_widths_at_the_official_sizes():
    for d in (384, 768, 1152, 1536, 96):
        assert swiglu_width(4 * d, "floor") == swiglu_width(4 * d, "ceil8")
    assert (swiglu_width(4096, "floor"), swiglu_width(4096, "ceil8")) == (2730, 2736)  # L
    assert (swiglu_width(7168, "floor"), swiglu_width(7168, "ceil8")) == (4778, 4784)  # 1.6B
    with pytest.raises(ValueError, match="unknown SwiGLU width rule 'round'"):
        swiglu_width(128, "round")


def test_without_shift_the_branches_are_only_scaled():
    """With the shift rows of a 6d projection zeroed, the 4d (scale, gate) block computes the same thing."""
    torch.manual_seed(0)
    six = DiT(tiny(adaln_shift=True)).eval()
    four = DiT(tiny(adaln_shift=False)).eval()
    sd = six.state_dict()
    g = torch.Generator().manual_seed(1)
    for k in sd:
        if sd[k].dtype.is_floating_point and k != "pos_embed":
            sd[k] = torch.randn(sd[k].shape, generator=g) * 0.2
    d = 32
    for i in range(2):
        for part in ("weight", "bias"):
            w = sd[f"blocks.{i}.adaLN_modulation.1.{part}"]
            w[0:d] = 0  # shift_msa
            w[3 * d : 4 * d] = 0  # shift_mlp
    six.load_state_dict(sd)
    sd4 = dict(sd)
    for i in range(2):
        for part in ("weight", "bias"):
            w = sd[f"blocks.{i}.adaLN_modulation.1.{part}"]
            sd4[f"blocks.{i}.adaLN_modulation.1.{part}"] = torch.cat([w[d : 3 * d], w[4 * d :]])
    four.load_state_dict(sd4)
    x, t, y = torch.randn(2, 2, 8, 8, generator=g), torch.tensor([3.0, 500.0]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(four(x, t, y), six(x, t, y), rtol=1e-6, atol=1e-6)


def test_no_shift_needs_adaln_zero():
    with pytest.raises(ValueError, match="adaln_shift: False .* needs conditioning 'adaln-zero'"):
        tiny(adaln_shift=False, conditioning="adaln-single")


def test_official_options_train_with_routes_and_post_norm():
    """The new values combine with TREAD's routes (the rope tables follow the kept tokens) and post-norm."""
    opts = lightningdit_options(**RELEASED_OPTIONS)
    for extra in (dict(routes=[(0, 0, 0.5)]), dict(norm_placement="post", adaln_shift=False)):
        model = DiT(tiny(**{**opts, **extra}))
        x, t, y = torch.randn(2, 2, 8, 8), torch.tensor([3.0, 500.0]), torch.tensor([1, 2])
        out = model(x, t, y, generator=torch.Generator().manual_seed(0))
        out.square().mean().backward()
        assert out.shape == (2, 4, 8, 8)  # learn_sigma: noise and variance halves
        assert model.blocks[0].norm1.weight.grad is not None


def test_the_lightningdit_method_is_the_released_block():
    """params.yaml's ``lightningdit`` method runs the released configs' options at the micro scale."""
    cfg = resolve(load_params(Path(__file__).parents[1] / "params.yaml"), "micro", "lightningdit", 0).model
    for key, value in lightningdit_options(**RELEASED_OPTIONS).items():
        assert getattr(cfg, key) == value, key
    assert cfg.conditioning == "adaln-zero" and cfg.norm_placement == "pre" and cfg.init == "adaln-zero"
