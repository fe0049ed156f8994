import os

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, settings

# Hypothesis profiles, picked by HYPOTHESIS_PROFILE:
# - "dev" (the default, for local runs): random examples, a fresh draw on every run, so repeated runs explore
#   new inputs; a failure prints how to reproduce it, and hypothesis replays it first on the next run;
# - "ci" (set by `nox -s tests` and `nox -s quick`): derandomized, so a red CI run is reproducible and a green
#   one stays green;
# - "thorough" (set by `nox -s property`): a few hundred random examples per property test.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=12, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=25, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=300, print_blob=True, **_COMMON)
# tests/mutation.py: the CI examples, without shrinking a failure (a caught break needs no minimal example)
settings.register_profile(
    "mutation", derandomize=True, max_examples=12, phases=[Phase.explicit, Phase.generate], **_COMMON
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Under pytest-xdist (``nox -s tests`` runs one worker per core) each worker's torch gets its share of the cores:
# torch's default, a thread per core in every worker, oversubscribes them. Tests that time or compare thread counts
# set their own.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# No torch.set_flush_denormal(True) here: hypothesis refuses to draw floats while subnormals are
# flushed. Training and benchmark entry points set it; tests are too short for denormals to matter.


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
    # training and benchmark entry points flush denormals (a process-wide switch); switch it back so
    # hypothesis can draw floats in the tests that follow
    torch.set_flush_denormal(False)


@pytest.fixture(autouse=True, scope="session")
def _count_each_model_once():
    """Resolving a run counts its step's MACs (``repro.build`` runs the model's forward and backward on the meta
    device, a second or more per routed config on this CPU), and the tests resolve the same few configs hundreds
    of times (every scale, method and seed). Within the test session each (model config, batch) is counted once:
    the count is a pure function of the two (the tests of the count itself call ``repro.models`` directly)."""
    import repro.build

    counted: dict[tuple[str, int], int] = {}
    count = repro.build.train_step_macs

    def once(config, batch_size: int) -> int:
        key = (repr(config), batch_size)
        if key not in counted:
            counted[key] = count(config, batch_size)
        return counted[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repro.build, "train_step_macs", once)
        yield


@pytest.fixture
def fashion_mnist_data():
    """Skip the test unless Fashion-MNIST can be read without a download (``$REPRO_DATA_DIR``, Debian's
    ``dataset-fashion-mnist`` or the cache): a test that reads it must not download it on a machine without it."""
    from repro.data import fashion_mnist

    try:
        return fashion_mnist.find_data_dir(download=False)
    except fashion_mnist.DataNotFoundError as e:
        pytest.skip(str(e).splitlines()[0])


# Measured numbers a test wants in the CI log (false-verdict rates, power, coverage): each is a property of the test's
# report (``record_property``), so the summary finds them whether the test ran here or in a pytest-xdist worker.


@pytest.fixture
def report_measured(record_property):
    """``report_measured(name, text)``: the line goes to the terminal summary and to the JUnit properties."""

    def _report(name: str, text: str) -> None:
        record_property(name, text)

    return _report


def pytest_terminal_summary(terminalreporter):
    measured = [
        f"{name}: {text}"
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, text in getattr(report, "user_properties", ())
    ]
    if measured:
        terminalreporter.section("measured")
        for line in measured:
            terminalreporter.write_line(line)


@pytest.fixture
def tiny_params(tmp_path):
    """``tiny_params(steps=..., seeds=..., dit_model=...) -> (params, path)``: a params file with DiT (learned
    sigma, plus ``dit_model``'s model settings) and SiT on a synthetic-data scale ``tiny``, small enough to train
    in seconds, one thread a run (so runs can go side by side), validation loss only."""

    def make(steps: int = 4, seeds=(0,), dit_model: dict | None = None):
        params = {
            "methods": {
                "dit": {"objective": {"name": "ddpm"}, "model": {"learn_sigma": True, **(dit_model or {})}},
                "sit": {"objective": {"name": "interpolant"}, "model": {"learn_sigma": False}},
            },
            "scales": {
                "tiny": {
                    "methods": ["dit", "sit"],
                    "seeds": list(seeds),
                    "model": dict(input_size=8, patch_size=4, in_channels=1, hidden_size=16, depth=2, num_heads=2),
                    "data": {"name": "synthetic", "subset": 32},
                    "train": dict(
                        steps=steps, batch_size=4, lr=1e-3, ema_decay=0.9, eval_every=2, ckpt_every=2, threads=1
                    ),
                    "eval": {"metrics": [], "val_size": 4, "val_points": 2},
                }
            },
        }
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return params, path

    return make


def _released_shapes(depth: int, d: int, patch: int, in_ch: int = 4, classes: int = 1000, size: int = 32) -> dict:
    """Keys and shapes of the released DiT checkpoints (facebookresearch/DiT ``models.py``), written out from the
    paper's architecture. SiT's release (willisma/SiT ``models.py``) keeps the same module tree and names:
    ``out_channels = 2 * in_channels`` (learn_sigma), LayerNorms without affine parameters, the frozen sin-cos
    ``pos_embed`` stored."""
    out, tokens = 2 * in_ch, (size // patch) ** 2
    shapes = {
        "pos_embed": (1, tokens, d),
        "x_embedder.proj.weight": (d, in_ch, patch, patch),
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (classes + 1, d),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d),
        "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.linear.weight": (patch * patch * out, d),
        "final_layer.linear.bias": (patch * patch * out,),
    }
    for i in range(depth):
        for name, shape in {
            "attn.qkv.weight": (3 * d, d),
            "attn.qkv.bias": (3 * d,),
            "attn.proj.weight": (d, d),
            "attn.proj.bias": (d,),
            "mlp.fc1.weight": (4 * d, d),
            "mlp.fc1.bias": (4 * d,),
            "mlp.fc2.weight": (d, 4 * d),
            "mlp.fc2.bias": (d,),
            "adaLN_modulation.1.weight": (6 * d, d),
            "adaLN_modulation.1.bias": (6 * d,),
        }.items():
            shapes[f"blocks.{i}.{name}"] = shape
    return shapes


@pytest.fixture(scope="session")
def released_shapes():
    """``released_shapes(depth, d, patch, in_ch=4, classes=1000, size=32)``: the released DiT / SiT state-dict
    shapes (see :func:`_released_shapes`)."""
    return _released_shapes
