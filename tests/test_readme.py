"""The README's examples are what the commands print: `repro --help`, the ledger's counts, the main job's members
and the size of the `dvc metrics show` table. A change to any of them fails here until the README follows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repro.cli import main
from repro.experiments.recheck import MEMBERS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(start: str) -> str:
    """The text of the README's fenced block whose first line is ``start``, that line excluded."""
    at = README.index(f"```text\n{start}\n") + len(f"```text\n{start}\n")
    return README[at : README.index("\n```", at)] + "\n"


def test_the_readme_shows_what_repro_help_prints(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")  # the width the README's copy was printed at
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert _block("$ repro --help") == capsys.readouterr().out


def test_the_readme_gives_the_ledgers_counts():
    ledger = json.loads((ROOT / "reports" / "claims.json").read_text())
    counts = ", ".join(f"{n} {v}" for v, n in ledger["counts"].items())
    written = re.search(r"Counts: (.*?)\.", (ROOT / "reports" / "claims.md").read_text()).group(1)
    assert written == counts  # what repro claims wrote, in both files
    assert f"Counts: {counts}." in README
    specs = len(list((ROOT / "specs").glob("*.yaml")))
    assert sum(ledger["counts"].values()) == specs
    assert f"evaluates the {specs} specs under `specs/`" in README


def test_the_readme_names_the_main_jobs_members():
    sentence = re.search(r"`nox -s repro` re-trains a declared subset.*?seed 0 of (.*?)\n\(", README, re.S).group(1)
    assert re.findall(r"`([^`]+)`", sentence) == list(MEMBERS["micro"])


def test_the_readme_counts_the_rows_of_dvc_metrics_show():
    rows = len(list((ROOT / "goldens" / "micro" / "summary").rglob("*.json")))  # one row per metrics file
    assert f"one row per quantity, {rows} rows of" in README
