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


# Measured numbers a test wants in the CI log (false-verdict rates, power, coverage): shown in the terminal summary
_MEASURED: list[str] = []


@pytest.fixture
def report_measured(record_property):
    """``report_measured(name, text)``: the line goes to the terminal summary and to the JUnit properties."""

    def _report(name: str, text: str) -> None:
        _MEASURED.append(f"{name}: {text}")
        record_property(name, text)

    return _report


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)
