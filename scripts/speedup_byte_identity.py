"""Byte-identity check of the speedup/targets/claims/summary outputs (issue 34, item 2).

Runs every ``repro speedup``/``repro targets``/``repro claims``/``repro summary`` command exactly as ``dvc.yaml``
writes it, in the repository root, then ``repro claims`` once more for its stdout, and writes a manifest of what came
out: each command's exit status and output, the sha256 of every file under goldens/ and reports/, and ``git status
--short``. ``--save NAME`` keeps the manifest; ``--against NAME`` compares with a kept one and exits 1 on any
difference. Files a command created that git does not track (the micro-long reports, written with --allow-no-runs
while its runs are not made) are hashed and removed right after it; files the commands rewrote are checked out again
at the end. Hashes blank the HEAD commit's hash (and ``+dirty``), which the summary's provenance records.

    PYTHONPATH=$PWD PATH=/work/main/.venv/bin:$PATH python scripts/speedup_byte_identity.py --save before
    ... change ...
    PYTHONPATH=$PWD PATH=/work/main/.venv/bin:$PATH python scripts/speedup_byte_identity.py --against before
"""

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ("repro speedup", "repro targets", "repro claims", "repro summary")


def commands() -> list[tuple[str, str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        cmd = stage.get("cmd")
        if isinstance(cmd, str) and cmd.strip().startswith(PREFIXES):
            out.append((name, " ".join(cmd.split())))
    return out


def sha(path: Path, head: str) -> str:
    """The file's sha256 with the HEAD commit's hash blanked (provenance records name the commit that wrote them,
    ``+dirty`` while the tree has uncommitted changes: neither is what the code computes)."""
    data = path.read_bytes().replace(head.encode() + b"+dirty", b"<HEAD>").replace(head.encode(), b"<HEAD>")
    return hashlib.sha256(data).hexdigest()


def files(head: str) -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): sha(p, head)
        for top in ("goldens", "reports")
        for p in sorted((ROOT / top).rglob("*"))
        if p.is_file()
    }


def untracked() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "goldens", "reports"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--save")
    ap.add_argument("--against")
    args = ap.parse_args()
    before_untracked = untracked()
    manifest: dict = {"commands": {}}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for name, cmd in commands():
        r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True)
        manifest["commands"][name] = {"cmd": cmd, "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        # what the command created that git does not track (the micro-long reports, --allow-no-runs): hashed, then
        # removed, so that the later commands (claims) see the tree as committed
        created = sorted(untracked() - before_untracked)
        manifest["commands"][name]["created"] = {f: sha(ROOT / f, head) for f in created}
        for f in created:
            (ROOT / f).unlink()
        print(f"{name}: rc={r.returncode} created={created}", file=sys.stderr)
    r = subprocess.run("repro claims", shell=True, cwd=ROOT, capture_output=True, text=True)
    manifest["claims_stdout"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
    manifest["files"] = files(head)
    manifest["git_status"] = subprocess.run(
        ["git", "status", "--short", "goldens", "reports"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    # put back what the commands rewrote (the summary's provenance names HEAD): the tree is left as committed
    subprocess.run(["git", "checkout", "--", "goldens", "reports"], cwd=ROOT, check=True)
    print("git status --short goldens reports:\n" + (manifest["git_status"] or "(clean)\n"), file=sys.stderr)
    if args.save:
        Path(f"/tmp/speedup_bytes_{args.save}.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if args.against:
        old = json.loads(Path(f"/tmp/speedup_bytes_{args.against}.json").read_text())
        diffs = []
        for key in ("commands", "claims_stdout", "files", "git_status"):
            if old[key] != manifest[key]:
                if isinstance(old[key], dict):
                    for k in sorted(set(old[key]) | set(manifest[key])):
                        if old[key].get(k) != manifest[key].get(k):
                            diffs.append(f"{key}.{k}")
                else:
                    diffs.append(key)
        print("DIFFERENCES: " + ", ".join(diffs) if diffs else "IDENTICAL to " + args.against, file=sys.stderr)
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
