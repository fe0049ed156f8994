"""The layers of the package (README, "Architecture"), enforced on the source: every import of every module under
repro/ is read with ``ast`` (function-level imports too) and checked against the arrows that must never exist.

- The command line is on top: only ``repro/cli.py`` and ``repro/commands/`` parse arguments (``argparse``) or
  import ``repro.cli`` / ``repro.commands``. A library module that had its own ``python -m`` command keeps it as a
  shim under ``if __name__ == "__main__":``, which may import ``repro.cli`` (and nothing else of this rule).
- The library (``repro/models/``, ``repro/objectives/``, ``repro/data/``, ``repro/metrics/``) and the modules at
  the package root (the config, its builder, I/O, validation, provenance, the runtime) import nothing of
  ``repro.experiments``, ``repro.evidence`` or ``repro.commands``; ``repro/models/`` is the bottom of the library
  and imports nothing of ``repro.objectives`` either.
- ``repro/evidence/`` reads committed results and never trains or samples: no ``repro.experiments.train``,
  ``repro.experiments.campaign`` or ``repro.experiments.sample``.
- ``repro/evidence/speedup/`` is arithmetic over committed curves: nothing of ``repro.experiments``, the models or
  the objectives, and not the ledger (the ledger's modules read its records, not the other way round).
- ``repro/config.py`` is a leaf: no ``repro.models``, ``repro.objectives``, ``repro.metrics`` or ``repro.data``
  (what needs them is ``repro/build.py``'s); of the library it imports only ``repro.io`` and ``repro.validation``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repro"

COMMAND_LINE = ("argparse", "repro.cli", "repro.commands")
ON_TOP = ("repro/cli.py", "repro/commands/")  # where COMMAND_LINE may be imported

# Files that may still import argparse, each with why. Shrink this list; do not grow it without a reason.
ALLOWED_ARGPARSE = {
    # not argument parsing: DiT's train.py pickles an argparse.Namespace into its checkpoints, and reading one
    # weights-only needs that class on torch's allow-list
    "repro/models/convert.py": "argparse",
}

# The library and the modules at the package root sit below running experiments, the evidence and the commands.
ABOVE_THE_LIBRARY = ("repro.experiments", "repro.evidence", "repro.commands")
ROOT_MODULES = tuple(f"repro/{p.name}" for p in sorted(PACKAGE.glob("*.py")) if p.name not in ("cli.py", "__init__.py"))
LEDGER = tuple(
    f"repro.evidence.{p.stem}"
    for p in sorted((PACKAGE / "evidence").glob("*.py"))
    if p.stem not in ("__init__", "published")
)

NEVER: dict[str, tuple[str, ...]] = {
    "repro/models/": ("repro.objectives", *ABOVE_THE_LIBRARY),
    "repro/objectives/": ABOVE_THE_LIBRARY,
    "repro/data/": ABOVE_THE_LIBRARY,
    "repro/metrics/": ABOVE_THE_LIBRARY,
    **{module: ABOVE_THE_LIBRARY for module in ROOT_MODULES},
    "repro/config.py": ("repro.models", "repro.objectives", "repro.metrics", "repro.data", *ABOVE_THE_LIBRARY),
    "repro/evidence/": ("repro.experiments.train", "repro.experiments.campaign", "repro.experiments.sample"),
    "repro/evidence/speedup/": ("repro.experiments", "repro.models", "repro.objectives", *LEDGER),
}
# What repro/config.py may import of the library: the leaf helpers.
CONFIG_LEAVES = ("repro.io", "repro.validation")


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``"""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    sides = [test.left, *test.comparators]
    return (
        len(sides) == 2
        and isinstance(test.ops[0], ast.Eq)
        and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
        and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    )


def imports(source: str, rel: str) -> list[tuple[str, int, bool]]:
    """``(module, line, under a __main__ guard)`` for every import in ``source``, the file at ``rel`` (relative
    imports resolved against its package; ``from X import y`` gives both ``X`` and ``X.y``, y may be a module)."""
    tree = ast.parse(source)
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if _is_main_guard(node):
            guarded.update(id(n) for n in ast.walk(node))
    name = _module_name(rel)
    package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        under_main = id(node) in guarded
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, under_main) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((target, node.lineno, under_main))
            found += [(f"{target}.{a.name}", node.lineno, under_main) for a in node.names if a.name != "*"]
    return found


def _matches(module: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if module == p or module.startswith(p + ".")), None)


def violations(source: str, rel: str) -> list[str]:
    """Every import of ``source`` (the file at ``rel``, relative to the repository root) that breaks a rule."""
    out = []
    for module, line, under_main in imports(source, rel):
        hit = _matches(module, COMMAND_LINE)
        if hit and not rel.startswith(ON_TOP):
            shim = under_main and hit in ("repro.cli", "repro.commands")  # `python -m repro.X` calling its command
            if not (shim or ALLOWED_ARGPARSE.get(rel) == hit):
                out.append(f"{rel}:{line}: imports {hit} (only repro/cli.py and repro/commands/ may)")
        for layer, forbidden in NEVER.items():
            bad = _matches(module, forbidden) if rel.startswith(layer) else None
            if bad:
                out.append(f"{rel}:{line}: imports {bad} ({layer} must not import it)")
    return sorted(set(out))


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_breaks_a_layer_rule():
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        found += violations(path.read_text(), rel)
    assert not found, "\n".join(found)


def test_config_imports_only_leaf_helpers_of_the_library():
    rel = "repro/config.py"
    found = {m for m, _, _ in imports((ROOT / rel).read_text(), rel) if m == "repro" or m.startswith("repro.")}
    assert found, "the checker must see config.py's imports of repro.io and repro.validation"
    outside = sorted(m for m in found if not _matches(m, CONFIG_LEAVES))
    assert not outside, f"{rel} imports {outside}; only {CONFIG_LEAVES} of the library"


def test_every_command_is_a_module_of_repro_commands_and_back():
    from repro import cli

    modules = {f"repro.commands.{p.stem}" for p in (PACKAGE / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert set(cli.COMMANDS.values()) == modules


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("repro/metrics/x.py", "import argparse\n", "imports argparse"),
        ("repro/metrics/x.py", "def f():\n    from ..cli import add_command\n", "imports repro.cli"),
        ("repro/x.py", "from .commands import train\n", "imports repro.commands"),
        ("repro/x.py", "from . import cli\n", "imports repro.cli"),
        ("repro/x.py", 'if __name__ == "__main__":\n    import argparse\n', "imports argparse"),
        ("repro/models/x.py", "from ..experiments.train import train\n", "imports repro.experiments"),
        ("repro/models/x.py", "from .. import objectives\n", "imports repro.objectives"),
        ("repro/models/sub/x.py", "import repro.experiments.evaluation\n", "imports repro.experiments"),
        ("repro/objectives/__init__.py", "from ..evidence import rules\n", "imports repro.evidence"),
        ("repro/data/x.py", "from ..experiments.rundir import RunLock\n", "imports repro.experiments"),
        ("repro/metrics/x.py", "def f():\n    from ..evidence.speedup import welch\n", "imports repro.evidence"),
        ("repro/runtime.py", "from .experiments.train import train\n", "imports repro.experiments"),
        ("repro/build.py", "from .evidence import rules\n", "imports repro.evidence"),
        (
            "repro/evidence/x.py",
            "def f():\n    from ..experiments.sample import draw\n",
            "imports repro.experiments.sample",
        ),
        ("repro/evidence/x.py", "from repro.experiments.campaign import run\n", "imports repro.experiments.campaign"),
        (
            "repro/evidence/speedup/x.py",
            "def f():\n    from ...experiments.rundir import RunLock\n",
            "imports repro.experiments",
        ),
        ("repro/evidence/speedup/x.py", "from ..rules import holm\n", "imports repro.evidence.rules"),
        ("repro/evidence/speedup/__init__.py", "from ...models import DiT\n", "imports repro.models"),
        ("repro/config.py", "from .models import DiTConfig\n", "imports repro.models"),
        ("repro/config.py", "def f():\n    from .objectives import OBJECTIVES\n", "imports repro.objectives"),
        ("repro/config.py", "def f():\n    from .metrics import featurenet\n", "imports repro.metrics"),
        ("repro/config.py", "import repro.experiments.train\n", "imports repro.experiments"),
        ("repro/config.py", "from .data.loader import TrainData\n", "imports repro.data"),
    ],
)
def test_the_checker_finds_a_planted_violation(rel, source, expected):
    found = violations(source, rel)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("repro/x.py", 'if __name__ == "__main__":\n    from repro.cli import run_as_module\n'),  # a shim
        ("repro/commands/x.py", "import argparse\nfrom ..cli import add_command\nfrom ..experiments.train import t\n"),
        ("repro/cli.py", "import argparse\n"),
        ("repro/models/x.py", "from ..config import ConfigError\nfrom .layers import Attention\n"),
        ("repro/objectives/x.py", "from ..models import DiT\n"),
        ("repro/evidence/x.py", "from .speedup import welch\nfrom ..io import read_yaml\n"),
        ("repro/evidence/speedup/x.py", "from ...io import atomic_path\nfrom .record import Comparison\n"),
        ("repro/experiments/x.py", "from ..evidence.speedup import train_targets\nfrom ..models import DiT\n"),
        ("repro/x.py", "import repro.trainer_notes\n"),  # a prefix of a name is not the module
    ],
)
def test_the_checker_passes_allowed_imports(rel, source):
    assert violations(source, rel) == []


def test_commands_record_what_they_parsed_not_sys_argv():
    """A command's records name the arguments main() parsed (``args.invocation``, ``args.argv``): ``sys.argv`` is
    another program's when a command runs in-process (a landing made inside pytest recorded pytest's options)."""
    found = []
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "argv" and getattr(node.value, "id", None) == "sys":
                found.append(f"{path.name}:{node.lineno}")
    assert [f.split(":")[0] for f in found] == ["gpu.py"], (
        found
    )  # gpu's own `python -m repro.experiments.gpu` parser only


# What `repro train` imports but a training stage need not depend on, each with why. The training stages' deps in
# dvc.yaml are the one declared list of what makes a run; this keeps it from missing a file the run imports.
NOT_A_TRAIN_DEP = {
    "repro/__init__.py": "the package's docstring and version string",
    "repro/cli.py": "dispatches `repro train` to repro/commands/train.py (a dep); it computes nothing of a run",
    "repro/commands/__init__.py": "the command modules' package docstring",
    "repro/data/latents.py": "read only when data.name is latents (the paper scale); the CPU scales train on images",
    "repro/experiments/__init__.py": "the running layer's package docstring",
}


def _module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def import_closure(module: str) -> set[str]:
    """The repository files ``module`` imports, transitively (function-level imports included, ``__main__``
    shims not), with the packages on the way."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None:
            continue
        rel = path.relative_to(ROOT).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages' __init__ run first
        todo += [m for m, _, under_main in imports(path.read_text(), rel) if m.startswith("repro") and not under_main]
    return seen


def test_every_training_stage_depends_on_every_file_a_run_imports():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    training = {name: s for name, s in stages.items() if name.startswith("train")}
    assert training, "dvc.yaml has no training stage"
    needed = import_closure("repro.commands.train")
    assert "repro/experiments/train.py" in needed and "repro/models/dit.py" in needed  # the walk reaches the model
    for name, stage in training.items():
        deps = [d for d in stage["deps"] if isinstance(d, str)]
        missing = sorted(
            f
            for f in needed
            if f not in NOT_A_TRAIN_DEP and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
        )
        assert not missing, f"{name}: a run imports {missing}, which the stage does not depend on"
    stale = sorted(set(NOT_A_TRAIN_DEP) - needed)
    assert not stale, f"NOT_A_TRAIN_DEP names files a run no longer imports: {stale}"
