"""The declared breaks of tests/mutants.yaml stay runnable: well formed, their text in the code, their tests there.

``python tests/mutation.py`` (``nox -s mutation``) applies them and runs their tests; this only checks, in a
second, that the list still fits the code, so a change to the code that moves a break's text is noticed here.
"""

from __future__ import annotations

import re

import pytest
from mutation import ROOT, load, occurrences

BREAKS = load()


def test_the_list_covers_every_rule_a_claim_leans_on():
    files = {m["file"] for m in BREAKS}
    assert {
        "repro/models/routing.py",  # TREAD routing
        "repro/models/dit.py",  # adaLN-zero, dense inference
        "repro/objectives/base.py",  # samplers run dense
        "repro/objectives/interpolant.py",  # SiT's samplers
        "repro/objectives/ddpm.py",  # DDPM posterior and sampler
        "repro/experiments/train.py",  # gradient accumulation, EMA, resume
        "repro/evidence/speedup/stats.py",  # the speedup tests and interval
        "repro/evidence/rules.py",  # the verdict
    } <= files
    assert {m["section"] for m in BREAKS} == {"mutants", "verdict_rules"}


@pytest.mark.parametrize("m", BREAKS, ids=[m["id"] for m in BREAKS])
def test_a_break_applies_to_the_code_exactly_once(m):
    assert occurrences(ROOT, m) == 1, f"{m['file']} no longer holds the text of {m['id']} exactly once"


@pytest.mark.parametrize("m", BREAKS, ids=[m["id"] for m in BREAKS])
def test_the_tests_of_a_break_exist(m):
    for node in m["tests"]:
        path, name = node.split("::")[:2]
        text = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", text, re.MULTILINE), node
