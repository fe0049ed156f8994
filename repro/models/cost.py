"""What a model costs: parameters and multiply-accumulates (MACs), counted on the ``meta`` device.

Models are built from their configuration with no weights, and ``torch.utils.flop_counter.FlopCounterMode``
records the matrix products (linear layers, convolutions, attention). That counter charges 2 FLOPs per
multiply-accumulate, so MACs = FLOPs / 2; every count here is in MACs. Elementwise work (norms,
activations, the loss, the optimizer update) is not a matrix product and is counted apart, by
:class:`ElementCounter`, where a published figure may have included it.

``train_step_macs`` is the cost a training budget is measured in: one step, forward and backward, with
TREAD's routes active and stochastic depth at its expected saving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .dit import DiT, DiTConfig, config_for

_ATTENTION_OPS = ("bmm", "scaled_dot_product")  # in these models only attention uses batched matmuls


def macs_by_op(run: Callable[[], Any]) -> dict[str, int]:
    """Run ``run()`` under FlopCounterMode; MACs per aten op (the counter charges 2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return {str(op): int(flops) // 2 for op, flops in counter.get_flop_counts()["Global"].items()}


def attention_macs(by_op: Mapping[str, int]) -> int:
    """MACs of the attention score and value products (q k^T and a v), kept apart from linear layers."""
    return sum(n for op, n in by_op.items() if any(key in op for key in _ATTENTION_OPS))


class ElementCounter:
    """Counts the elements that pass through norms and activations, and the bias adds of convolutions.

    Matrix-product counters ignore these; some published figures count them (one op per element), so the
    audit records them to test which convention a figure used.
    """

    NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    ACTIVATIONS = (nn.SiLU, nn.GELU)

    def __init__(self, model: nn.Module):
        self.counts = {"norm_elements": 0, "activation_elements": 0, "conv_bias_adds": 0}
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()]

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(module, self.NORMS):
            self.counts["norm_elements"] += inputs[0].numel()
        elif isinstance(module, self.ACTIVATIONS):
            self.counts["activation_elements"] += output.numel()
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            self.counts["conv_bias_adds"] += output.numel()

    def close(self) -> dict[str, int]:
        for h in self._handles:
            h.remove()
        return dict(self.counts)


def num_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameter count; ``trainable_only`` leaves out frozen tensors (DiT's fixed sin-cos table)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def meta_dit(name: str, **overrides) -> DiT:
    """A named DiT built on the meta device (shapes only). Routed blocks need no fp32 cast to be counted."""
    if overrides.get("routes"):
        overrides.setdefault("fp32_after_route", False)  # a dtype cast on the block after a route; no MACs
    with torch.device("meta"):
        return DiT(config_for(name, **overrides))


def _dit_inputs(model: DiT, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = model.config
    x = torch.empty(batch, cfg.in_channels, cfg.input_size, cfg.input_size, device="meta")
    t = torch.empty(batch, device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    return x, t, y


def dit_forward_macs(model: DiT, batch: int = 1, routed: bool = False) -> dict[str, int]:
    """MACs by op of one forward pass; ``routed`` forces the model's routes on (as in a training step)."""
    model.eval()
    x, t, y = _dit_inputs(model, batch)
    with torch.no_grad():
        return macs_by_op(lambda: model(x, t, y, force_routing=routed))


def dit_train_step_macs(model: DiT, batch: int = 1) -> dict[str, int]:
    """MACs by op of a training step: forward in training mode (routes active) and backward to every weight.

    The loss (a mean of squares) and the optimizer update are elementwise and not counted.
    """
    model.train()
    x, t, y = _dit_inputs(model, batch)

    def step():
        out = model(x, t, y)
        out.square().mean().backward()

    by_op = macs_by_op(step)
    model.zero_grad(set_to_none=True)
    return by_op


def train_step_macs(config: DiTConfig, batch_size: int) -> int:
    """MACs of one training step (forward + backward) of a model config at ``batch_size``, routes active.

    Stochastic depth's saving is random per step, so it is counted at its expectation: the dense step
    minus ``prob`` times the cost of each skippable block, a block's cost being the difference between
    the same model at depth D and D - 1.
    """

    def total(cfg: DiTConfig) -> int:
        if cfg.routes:
            cfg = cfg.replace(fp32_after_route=False)  # a dtype cast; no MACs
        with torch.device("meta"):
            model = DiT(cfg)
        return sum(dit_train_step_macs(model, batch=batch_size).values())

    sd = config.stochastic_depth
    if sd is None:
        return total(config)
    dense = config.replace(stochastic_depth=None)
    per_block = total(dense) - total(dense.replace(depth=dense.depth - 1))
    return int(round(total(dense) - sd.prob * (sd.end - sd.start + 1) * per_block))
