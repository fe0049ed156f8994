"""Paper-scale data: latent shards memory-mapped, each DDP rank reading only its slice of every batch."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from repro.data import latents as lt
from repro.data.loader import TrainData


def _write_shards(directory, counts, shape=(4, 2, 2)):
    """Shards and manifest in the format the encoder writes, filled with known values (item i is all i)."""
    directory.mkdir(parents=True)
    shards, start = [], 0
    for k, n in enumerate(counts):
        values = torch.arange(start, start + n, dtype=torch.float32)
        latents = values.reshape(n, 1, 1, 1).expand(n, *shape).clone()
        labels = torch.arange(start, start + n) % 10
        name = f"shard-{k:05d}.pt"
        torch.save({"latents": latents, "labels": labels}, directory / name)
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        shards.append({"file": name, "count": n, "sha256": digest})
        start += n
    manifest = {
        "format": lt.FORMAT_VERSION,
        "count": start,
        "latent_shape": list(shape),
        "classes": [],
        "shards": shards,
    }
    (directory / lt.MANIFEST).write_text(json.dumps(manifest))
    return start


def test_mapped_latents_index_across_shards_like_one_array(tmp_path):
    n = _write_shards(tmp_path / "lat", [5, 3, 7])
    mapped = lt.LatentShards(tmp_path / "lat").mapped()
    assert len(mapped) == n and mapped.shape == (n, 4, 2, 2)
    index = torch.tensor([14, 0, 5, 7, 8, 4, 4])
    got = mapped[index]
    assert got.dtype == torch.float32 and got.shape == (7, 4, 2, 2)
    assert torch.equal(got[:, 0, 0, 0], index.float()) and (got == got[:, :1, :1, :1]).all()
    assert mapped.labels.tolist() == [i % 10 for i in range(n)]
    head = mapped[:6]
    assert isinstance(head, lt.MappedLatents) and len(head) == 6 and torch.equal(head[torch.tensor([5])], got[2:3])
    assert torch.equal(mapped[-2:][:, 0, 0, 0], torch.tensor([13.0, 14.0]))
    with pytest.raises(IndexError):
        mapped[torch.tensor([n])]
    with pytest.raises(IndexError):
        head[torch.tensor([6])]


def test_a_damaged_shard_is_refused_before_training(tmp_path):
    _write_shards(tmp_path / "lat", [4, 4])
    (tmp_path / "lat" / "shard-00001.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="sha256"):
        lt.LatentShards(tmp_path / "lat").mapped()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_ranks_see_disjoint_data_and_together_the_whole_epoch(tmp_path, grad_accum):
    n = _write_shards(tmp_path / "lat", [10, 6, 8])  # 24 items
    cfg = SimpleNamespace(data=SimpleNamespace(name="latents", path=str(tmp_path / "lat"), subset=None), seed=3)
    data = TrainData(cfg)
    assert isinstance(data.images, lt.MappedLatents) and len(data) == n
    world, batch = 2, 8
    shards = world * grad_accum
    seen = {rank: [] for rank in range(world)}
    for step in range(n // batch):  # one epoch
        for rank in range(world):
            for a in range(grad_accum):
                idx = data.shard_indices(step, batch, rank * grad_accum + a, shards)
                assert len(idx) == batch // shards
                x, y = data.images[idx], data.labels[idx]
                assert torch.equal(x[:, 0, 0, 0].long(), idx) and torch.equal(y, idx % 10)  # the items asked for
                seen[rank] += idx.tolist()
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(n))
    # the slices are the training loop's: consecutive equal parts of the global batch
    full = data.batch_indices(0, batch)
    parts = [data.shard_indices(0, batch, s, shards) for s in range(shards)]
    assert torch.equal(torch.cat(parts), full)
