"""The training data as the loop reads it: batches that are a function of ``(seed, step)``, and the fixed
validation batch. Nothing random is carried in memory, so a resumed run reads exactly the batches an
uninterrupted one reads."""

from __future__ import annotations

import torch

from ..config import RunConfig

SEED_STRIDE = 1_000_003


class TrainData:
    """Training images (N, C, H, W) in [-1, 1] with labels; batches are a function of (seed, step)."""

    def __init__(self, cfg: RunConfig):
        d = cfg.data
        if d.name == "fashion-mnist":
            from . import fashion_mnist

            ds = fashion_mnist.load("train")
            self.images, self.labels = ds.float_images(), ds.labels.long()
        elif d.name == "synthetic":
            g = torch.Generator().manual_seed(cfg.seed)
            n, c, s = d.subset or 1024, cfg.model.in_channels, cfg.model.input_size
            self.labels = torch.randint(0, cfg.model.num_classes, (n,), generator=g)
            # class-dependent blobs: learnable structure, no files needed
            base = torch.randn(cfg.model.num_classes, c, s, s, generator=g).tanh()
            self.images = (base[self.labels] + 0.1 * torch.randn(n, c, s, s, generator=g)).clamp(-1, 1)
        else:
            from .latents import LatentShards

            # the shards memory-mapped (ImageNet-256 latents are about 21 GB in float32): every batch is still
            # a uniform draw from the whole set, and each rank reads only the items of its slice
            mapped = LatentShards(d.path).mapped()
            self.images, self.labels = mapped, mapped.labels
        if d.subset is not None:
            self.images, self.labels = self.images[: d.subset], self.labels[: d.subset]
        self.seed = cfg.seed
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The permutation of the data for ``epoch`` (the last one drawn is kept: batches walk through it)."""
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
            self._order = (epoch, torch.randperm(len(self), generator=g))
        return self._order[1]

    def shard_indices(self, step: int, batch_size: int, shard: int, shards: int) -> torch.Tensor:
        """The items of ``step``'s global batch that micro-batch ``shard`` of ``shards`` (``rank * grad_accum +
        accumulation index`` of ``world * grad_accum``) trains on: consecutive equal slices of the batch."""
        micro = batch_size // shards
        return self.batch_indices(step, batch_size)[shard * micro : (shard + 1) * micro]

    def batch_indices(self, step: int, batch_size: int) -> torch.Tensor:
        """Indices of the global batch of ``step``: consecutive slices of a per-epoch permutation."""
        n = len(self)
        start = step * batch_size
        parts, taken = [], 0
        while taken < batch_size:
            epoch, offset = divmod(start + taken, n)
            take = min(batch_size - taken, n - offset)
            parts.append(self.epoch_order(epoch)[offset : offset + take])
            taken += take
        return torch.cat(parts)


def validation_batch(cfg: RunConfig, data: TrainData) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch of held-out images the validation loss is measured on: the first test images of
    Fashion-MNIST; for latents, the first ``val_size`` of the latent set's held-out, class-balanced validation
    set (never in a training shard); for synthetic data, the last ``val_size`` items."""
    if cfg.data.name == "fashion-mnist":
        from . import fashion_mnist

        ds = fashion_mnist.load("test")
        return ds.float_images()[: cfg.eval.val_size], ds.labels[: cfg.eval.val_size].long()
    if cfg.data.name == "latents":
        from .latents import LatentShards

        return LatentShards(cfg.data.path).validation(cfg.eval.val_size)
    return data.images[-cfg.eval.val_size :], data.labels[-cfg.eval.val_size :]
