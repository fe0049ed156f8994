"""Mutation check: break the code in each declared way and see whether the tests listed for the break fail.

Each break of ``tests/mutants.yaml`` names a file, an exact piece of its text (found exactly once), the text that
replaces it, a one-line description and the pytest node ids expected to catch it. The repository is copied once to
a temporary folder; the working tree is never written. In the copy, the listed tests are first run on the unbroken
code (they must pass, or "caught" would mean nothing); then each break is applied in turn, its tests run
(``pytest -x -q``, ``PYTHONPATH`` at the copy, hypothesis profile ``mutation``: the derandomized CI examples, without
shrinking) and the file restored.

    python tests/mutation.py                 # every break; exit status 1 if any is not caught
    python tests/mutation.py --only ID ...   # some of them
    python tests/mutation.py --list          # the breaks, without running anything

A break is *caught* when pytest reports failing tests (exit status 1). Passing tests, a stale break (its text is no
longer in the file, or is there more than once), a test id that does not exist, or a timeout count as not caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tests" / "mutants.yaml"
SECTIONS = ("mutants", "verdict_rules")
FIELDS = ("id", "file", "original", "replacement", "description", "tests")


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked files and untracked ones not ignored: no environments, caches or run
    outputs) copied to ``dest``; without git, everything but the usual environment and cache folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if listed.returncode != 0:
        ignore = shutil.ignore_patterns(".git", ".venv", ".nox", ".hypothesis", ".pytest_cache", "__pycache__")
        shutil.copytree(ROOT, dest, ignore=ignore)
        return
    for name in listed.stdout.decode().split("\0"):
        src = ROOT / name
        if name and src.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def load(path: Path = LIST) -> list[dict]:
    """The declared breaks, each with its ``section``; the list's structure is checked."""
    doc = yaml.safe_load(path.read_text())
    unknown = set(doc) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    breaks, seen = [], set()
    for section in SECTIONS:
        for i, m in enumerate(doc.get(section) or []):
            where = f"{path.name}: {section}[{i}]"
            missing = [f for f in FIELDS if not m.get(f)]
            if missing or set(m) - set(FIELDS):
                raise ValueError(f"{where}: needs exactly the fields {', '.join(FIELDS)}; missing {missing}")
            if m["id"] in seen:
                raise ValueError(f"{where}: id {m['id']!r} is used twice")
            if m["original"] == m["replacement"]:
                raise ValueError(f"{where} ({m['id']}): the replacement equals the original")
            if not isinstance(m["tests"], list) or not all("::" in t for t in m["tests"]):
                raise ValueError(f"{where} ({m['id']}): tests must be a list of pytest node ids (file::test)")
            seen.add(m["id"])
            breaks.append({**m, "section": section})
    return breaks


def occurrences(root: Path, m: dict) -> int:
    """How many times the break's original text occurs in its file under ``root`` (0 if the file is gone)."""
    path = root / m["file"]
    return path.read_text().count(m["original"]) if path.is_file() else 0


def run_tests(root: Path, tests: list[str], profile: str, timeout: float) -> tuple[int | None, str]:
    """pytest -x -q on ``tests`` in the copy at ``root``: (exit status or None on timeout, output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYPOTHESIS_PROFILE")}
    # no bytecode: a restored file of the broken file's size and modification second could reuse its stale .pyc
    env.update(PYTHONPATH=str(root), HYPOTHESIS_PROFILE=profile, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "--no-header", "-p", "no:cacheprovider", *tests]
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    return out.returncode, out.stdout + out.stderr


def first_failure(output: str) -> str:
    found = re.search(r"^FAILED (\S+)", output, re.MULTILINE)
    return found.group(1) if found else "?"


def check(breaks: list[dict], profile: str, timeout: float, baseline: bool = True) -> int:
    stale = [m for m in breaks if occurrences(ROOT, m) != 1]
    for m in stale:
        print(f"STALE      {m['id']}: its original text occurs {occurrences(ROOT, m)} times in {m['file']}, not once")
    breaks = [m for m in breaks if m not in stale]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="repro-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        if baseline:
            tests = sorted({t for m in breaks for t in m["tests"]})
            t0 = time.perf_counter()
            rc, out = run_tests(copy, tests, profile, timeout * 2)
            if rc != 0:
                print(out[-4000:])
                print(f"the listed tests fail on the unbroken code (pytest exit status {rc}): fix that first")
                return 2
            print(f"unbroken code: the {len(tests)} listed tests pass ({time.perf_counter() - t0:.0f} s)")
        not_caught = len(stale)
        section = None
        for m in breaks:
            if m["section"] != section:
                section = m["section"]
                print(f"-- {section}")
            path = copy / m["file"]
            text = path.read_text()
            path.write_text(text.replace(m["original"], m["replacement"]))
            t0 = time.perf_counter()
            try:
                rc, out = run_tests(copy, m["tests"], profile, timeout)
            finally:
                path.write_text(text)
            seconds = time.perf_counter() - t0
            if rc == 1:
                verdict = f"caught     {m['id']} by {first_failure(out)}"
            else:
                not_caught += 1
                why = "timed out" if rc is None else "the tests pass" if rc == 0 else f"pytest exit status {rc}"
                verdict = f"NOT caught {m['id']} ({why})"
                if rc not in (None, 0):
                    print(out[-2000:])
            print(f"{verdict} [{seconds:.0f} s]: {m['description']}", flush=True)
    total = len(breaks) + len(stale)
    print(f"{total - not_caught} of {total} breaks caught in {time.perf_counter() - started:.0f} s")
    return 1 if not_caught else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these breaks")
    parser.add_argument("--list", action="store_true", help="print the breaks and their tests, run nothing")
    parser.add_argument("--file", type=Path, default=LIST, help="the list of breaks (default: tests/mutants.yaml)")
    parser.add_argument("--profile", default="mutation", help="hypothesis profile of the test runs (default: mutation)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed to one break's tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unbroken code")
    args = parser.parse_args(argv)
    breaks = load(args.file)
    if args.only:
        unknown = sorted(set(args.only) - {m["id"] for m in breaks})
        if unknown:
            parser.error(f"--only: unknown id(s) {unknown}; known: {', '.join(m['id'] for m in breaks)}")
        breaks = [m for m in breaks if m["id"] in args.only]
    if args.list:
        for m in breaks:
            print(f"{m['section']}: {m['id']} ({m['file']}): {m['description']}\n    " + "\n    ".join(m["tests"]))
        return 0
    return check(breaks, args.profile, args.timeout, baseline=not args.no_baseline)


if __name__ == "__main__":
    sys.exit(main())
