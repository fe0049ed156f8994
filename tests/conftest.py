import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# CI: derandomized, so a red run is reproducible; locally: random examples, a few more of them.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=12,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# No torch.set_flush_denormal(True) here: hypothesis refuses to draw floats while subnormals are
# flushed. Training and benchmark entry points set it; tests are too short for denormals to matter.


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
    # training and benchmark entry points flush denormals (a process-wide switch); switch it back so
    # hypothesis can draw floats in the tests that follow
    torch.set_flush_denormal(False)
