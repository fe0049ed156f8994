"""Structure claims: their pytest node ids run in one pytest subprocess; the outcomes become verdicts."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .schema import Spec
from .verdicts import CHECK_FAILED, INCONCLUSIVE, Result


def _node_matches(node: str, classname: str, name: str) -> bool:
    file, *rest = node.split("::")
    module = file[:-3].replace("/", ".")
    want_class = ".".join([module, *rest[:-1]])
    func = rest[-1]
    return classname == want_class and (name == func or name.startswith(func + "["))


def _pytest(args: Sequence[str], root: Path) -> subprocess.CompletedProcess:
    """pytest on ``args`` with the derandomized hypothesis profile (unless the caller chose one): a ledger's
    structure verdicts come from the same examples every time."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)


def collected_nodes(files: Sequence[str], root: Path) -> set[str]:
    """Node ids pytest collects from ``files`` (parametrized cases included, with their brackets)."""
    proc = _pytest(["--collect-only", "-q", *files], root)
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def node_exists(node: str, collected: set[str]) -> bool:
    return node in collected or any(c.startswith(node + "[") or c.startswith(node + "::") for c in collected)


def run_pytest(nodes: Sequence[str], root: Path) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Run the node ids in one pytest process; outcomes per node id as (test name, outcome), and pytest's tail.

    A node id pytest cannot find makes it refuse the whole run; then the existing ones run without it, and the
    missing one gets no outcome.
    """
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        proc = _pytest(["-q", f"--junitxml={xml}", *nodes], root)
        if proc.returncode == 4:  # usage error, typically "not found"
            collected = collected_nodes(
                sorted({n.split("::")[0] for n in nodes if Path(root, n.split("::")[0]).exists()}), root
            )
            present = [n for n in nodes if node_exists(n, collected)]
            if present:
                proc = _pytest(["-q", f"--junitxml={xml}", *present], root)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        cases: list[tuple[str, str, str]] = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                tags = {child.tag for child in case}
                outcome = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
                cases.append((case.get("classname", ""), case.get("name", ""), outcome))
    outcomes = {n: [(name, o) for cls, name, o in cases if _node_matches(n, cls, name)] for n in nodes}
    return outcomes, tail


def evaluate_structure(specs: Sequence[Spec], root: Path) -> list[Result]:
    nodes = sorted({n for s in specs for n in s.check["tests"]})
    outcomes, tail = run_pytest(nodes, root) if nodes else ({}, "")
    results = []
    for spec in specs:
        tests = spec.check["tests"]
        recheck = "python -m pytest -q " + " ".join(tests)
        evidence, failed, skipped = [], False, False
        for node in tests:
            got = outcomes.get(node, [])
            counts = {o: sum(1 for _, x in got if x == o) for o in ("passed", "failed", "skipped")}
            if not got:
                failed = True
                evidence.append(f"{node}: not found by pytest")
                continue
            failed |= counts["failed"] > 0
            skipped |= counts["skipped"] > 0
            cases = f" ({len(got)} cases)" if len(got) > 1 else ""
            state = ", ".join(f"{v} {k}" for k, v in counts.items() if v) if len(got) > 1 else got[0][1]
            evidence.append(f"{node}: {state}{cases if len(got) > 1 and counts['passed'] == len(got) else ''}")
        if failed:
            verdict = CHECK_FAILED
            evidence.append("pytest: " + tail.splitlines()[-1] if tail else "pytest produced no output")
        elif skipped:
            verdict = INCONCLUSIVE
        else:
            verdict = spec.check["if_pass"]
        results.append(Result(spec, verdict, evidence, recheck, "reference implementation"))
    return results
