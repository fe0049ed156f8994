"""TREAD token routing and stochastic depth.

TREAD (arXiv 2501.04765) trains a DiT with *routes*. A route ``(start, end, rate)`` draws, per
sample and uniformly at random, the ``floor(N * rate)`` tokens that bypass blocks ``start..end``
(inclusive). The other ``N - floor(N * rate)`` tokens go through those blocks; after block ``end``
they are scattered back into a copy of the activations saved before block ``start``, so bypassed
tokens re-enter exactly as they left. Nothing is added to the model: routing changes which tokens a
block sees, never its parameters, and at inference every token goes through every block.

Stochastic depth (Huang et al. 2016) is the ablation the debate's reply proposes: during training
each sample skips each block of a range with probability ``prob``. We use the usual "drop path"
rescaling, ``x + keep / (1 - prob) * (block(x) - x)``, so a block's expected residual increment in
training equals its increment at inference, when every block runs on every sample. Only the samples
that keep a block are computed, so, like TREAD, stochastic depth makes a training step cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..validation import ValidationError, check_int, check_real


@dataclass(frozen=True)
class Route:
    """Tokens bypass blocks ``start``..``end`` (inclusive) at ``rate`` (the fraction that bypasses)."""

    start: int
    end: int
    rate: float = 0.5

    def num_kept(self, num_tokens: int) -> int:
        return num_tokens - math.floor(num_tokens * self.rate)


@dataclass(frozen=True)
class StochasticDepth:
    """During training each sample skips each block ``start``..``end`` with probability ``prob``."""

    start: int
    end: int
    prob: float = 0.5


def as_route(r) -> Route:
    """Accept a Route, a (start, end, rate) sequence or a mapping with those keys."""
    if isinstance(r, Route):
        return r
    if isinstance(r, dict):
        unknown = set(r) - {"start", "end", "rate"}
        if unknown:
            raise ValueError(f"routes: unknown keys {sorted(unknown)}; allowed: start, end, rate")
        return Route(**r)
    if isinstance(r, (list, tuple)) and len(r) in (2, 3):
        return Route(*r)
    raise ValueError(f"routes: cannot read {r!r} as a route; give Route(start, end, rate) or (start, end, rate)")


def as_stochastic_depth(s) -> StochasticDepth | None:
    if s is None or isinstance(s, StochasticDepth):
        return s
    if isinstance(s, dict):
        return StochasticDepth(**s)
    if isinstance(s, (list, tuple)) and len(s) in (2, 3):
        return StochasticDepth(*s)
    raise ValueError(f"stochastic_depth: cannot read {s!r}; give StochasticDepth(start, end, prob)")


def _check_blocks(name: str, start, end, depth: int) -> None:
    """``start`` and ``end`` are integer block indices with 0 <= start <= end < depth."""
    for field, v in (("start", start), ("end", end)):
        check_int(f"{name}.{field}", v, low=0)
    if not 0 <= start <= end < depth:
        raise ValidationError(
            f"{name}: start={start}, end={end} out of range; allowed 0 <= start <= end < depth={depth}"
        )


def validate_routes(routes: Sequence[Route], depth: int) -> None:
    """0 <= start <= end < depth, 0 <= rate < 1, routes ordered and not overlapping."""
    prev_end = -1
    for i, r in enumerate(routes):
        name = f"routes[{i}]"
        _check_blocks(name, r.start, r.end, depth)
        check_real(f"{name}.rate", r.rate, ge=0.0, lt=1.0)
        if r.start <= prev_end:
            raise ValueError(
                f"{name}: start={r.start} overlaps or precedes the previous route ending at block {prev_end}; "
                "routes must be ordered and not overlap"
            )
        prev_end = r.end


def validate_stochastic_depth(sd: StochasticDepth | None, depth: int) -> None:
    if sd is None:
        return
    _check_blocks("stochastic_depth", sd.start, sd.end, depth)
    check_real("stochastic_depth.prob", sd.prob, ge=0.0, lt=1.0)


def sample_keep_ids(
    batch: int, num_tokens: int, rate: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Indices (B, N - floor(N*rate)) of the tokens that go through the route, drawn uniformly per
    sample without replacement and sorted, so kept tokens keep their relative order."""
    keep = num_tokens - math.floor(num_tokens * rate)
    noise = torch.rand(batch, num_tokens, generator=generator, device=generator.device if generator else device)
    ids = noise.argsort(dim=1)[:, :keep]
    return ids.sort(dim=1).values.to(device)


def check_keep_ids(ids: torch.Tensor, batch: int, num_tokens: int, route: Route, index: int) -> torch.Tensor:
    """Validate caller-given kept-token indices for route ``index``."""
    want = route.num_kept(num_tokens)
    if ids.dtype not in (torch.int64, torch.int32) or tuple(ids.shape) != (batch, want):
        raise ValueError(
            f"keep_ids[{index}]: expected an integer tensor of shape ({batch}, {want}), "
            f"got {tuple(ids.shape)} {ids.dtype}"
        )
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_tokens):
        raise ValueError(f"keep_ids[{index}]: indices must lie in [0, {num_tokens})")
    if want > 1 and (ids.sort(dim=1).values.diff(dim=1) == 0).any():
        raise ValueError(f"keep_ids[{index}]: indices must be distinct within each sample")
    return ids.long()


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), ids (B, K) -> (B, K, D)."""
    return x.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(saved: torch.Tensor, ids: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """Put the routed tokens back at ``ids`` in a copy of ``saved``; other tokens are ``saved``'s."""
    return saved.scatter(1, ids.unsqueeze(-1).expand(-1, -1, saved.shape[-1]), routed.to(saved.dtype))
