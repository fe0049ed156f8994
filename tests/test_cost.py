"""MAC counts of a small DiT against the count written out by hand, layer by layer."""

from __future__ import annotations

import pytest
import torch

from repro.models import DiT, DiTConfig, dit_forward_macs, meta_dit, num_params, train_step_macs
from repro.models.routing import Route, StochasticDepth

# a small DiT: 8x8x4 input, patch 2 (N = 16 tokens), d = 64, 4 heads, MLP 256, 2 blocks, learned variance
CFG = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
N, D, HIDDEN, P, C, OUT, FREQ = 16, 64, 256, 2, 4, 8, 256


def block_macs(tokens: int = N) -> int:
    """One block on one sample: qkv, projection, the two MLP layers, adaLN (on the condition), q k^T and a v."""
    linear = tokens * D * 3 * D + tokens * D * D + tokens * D * HIDDEN + tokens * HIDDEN * D
    return linear + D * 6 * D + 2 * tokens * tokens * D


PATCH = N * (P * P * C) * D  # the patch embedding convolution
T_FIRST = FREQ * D  # the timestep MLP's first layer, on the frequency embedding
EMBED = PATCH + T_FIRST + D * D
FINAL = D * 2 * D + N * D * (P * P * OUT)


def meta(cfg: DiTConfig) -> DiT:
    with torch.device("meta"):
        return DiT(cfg)


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_macs_are_the_layer_by_layer_count(batch):
    by_op = dit_forward_macs(meta(CFG), batch)
    assert sum(by_op.values()) == batch * (CFG.depth * block_macs() + EMBED + FINAL)
    assert by_op["aten.convolution"] == batch * PATCH
    assert by_op["aten.bmm"] == batch * CFG.depth * 2 * N * N * D  # attention kept apart from the linear layers


def test_a_training_step_is_forward_plus_two_backward_products():
    # backward computes the input and the weight gradients of every product (2x its forward MACs), except the
    # input gradients nothing needs: those of the image (patch convolution) and of the frequency embedding
    batch = 2
    forward = batch * (CFG.depth * block_macs() + EMBED + FINAL)
    assert train_step_macs(CFG, batch) == 3 * forward - batch * (PATCH + T_FIRST)


def test_stochastic_depth_is_counted_at_its_expected_saving():
    batch, prob = 2, 0.5
    dense = train_step_macs(CFG, batch)
    skipping = train_step_macs(CFG.replace(stochastic_depth=StochasticDepth(0, 1, prob)), batch)
    assert skipping == round(dense - prob * CFG.depth * 3 * batch * block_macs())


def test_a_route_counts_its_blocks_on_the_kept_tokens():
    # TREAD's route over both blocks at rate 0.5: the blocks see 8 of the 16 tokens in a training step
    batch = 1
    routed = CFG.replace(routes=(Route(0, 1, 0.5),))
    saving = train_step_macs(CFG, batch) - train_step_macs(routed, batch)
    assert saving == 3 * batch * CFG.depth * (block_macs(N) - block_macs(N // 2))


def test_num_params_of_a_named_size():
    # DiT-S/2 has 33M parameters in DiT's Table 4; the fixed sin-cos table is not trainable
    model = meta_dit("DiT-S/2")
    assert round(num_params(model, trainable_only=True) / 1e6) == 33
    assert num_params(model) - num_params(model, trainable_only=True) == model.pos_embed.numel()
