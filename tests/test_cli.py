"""The ``repro`` command line: fast top-level help, version, choices from params.yaml, one-line usage errors."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from repro import cli

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "repro.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_top_level_help_imports_no_subcommand_module_nor_torch():
    code = (
        "import sys, contextlib, io\n"
        "from repro import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('repro.', 'torch.')))\n"
        "print(loaded)\n"
        "assert 'train' in out.getvalue() and 'claims' in out.getvalue()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['repro.cli']"


def test_every_command_has_a_one_line_help():
    assert set(cli.HELP) == set(cli.COMMANDS)
    assert all(len(h) <= 80 and "\n" not in h for h in cli.HELP.values())


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_help_table_matches_what_each_command_registers(name):
    target, help_text = cli.COMMANDS[name], cli.HELP[name]
    assert target == f"repro.commands.{name.replace('-', '_')}"  # one module per command, registered one way
    sub = cli.Parser(prog="repro").add_subparsers(parser_class=cli.Parser)
    module = importlib.import_module(target)
    module.register(sub)
    (registered,) = sub._choices_actions
    assert registered.dest == name
    assert registered.help == help_text


def test_version_is_the_package_version():
    r = _run("--version")
    assert r.returncode == 0
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip() == f"repro {declared}"
    import repro

    assert repro.__version__ == declared


@pytest.mark.slow
def test_scale_and_method_show_the_choices_of_params_yaml_and_reject_others_in_one_line():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    r = _run("train", "--help")
    assert r.returncode == 0
    assert "{" + ",".join(params["scales"]) + "}" in r.stdout
    assert "{" + ",".join(params["methods"]) + "}" in r.stdout
    r = _run("train", "--scale", "smok", "--method", "dit")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "--scale" in lines[0] and "'smok'" in lines[0]
    for name in params["scales"]:
        assert name in lines[0]
    r = _run("rerun", "--scale", "micro", "--method", "dit")  # rerun's is --methods, and no abbreviation passes
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_a_custom_params_file_brings_its_own_choices(tmp_path):
    (tmp_path / "mine.yaml").write_text("scales: {tiny: {}}\nmethods: {mine: {}}\n")
    ns = cli.build_parser("train").parse_args(
        ["train", "--params", str(tmp_path / "mine.yaml"), "--scale", "tiny", "--method", "mine"]
    )
    assert (ns.scale, ns.method) == ("tiny", "mine")  # names from --params, not only from ./params.yaml


@pytest.mark.slow
def test_defaults_are_shown_once():
    parser = cli.build_parser("speedup")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["speedup"].format_help()
    assert text.count("(default") >= 5
    for line in text.splitlines():
        assert line.count("(default") <= 1, line
    train_help = _run("train", "--help").stdout
    assert "(default: 0)" in train_help  # --seed had no help text of its own
    assert "(default: None)" not in train_help and "(default: False)" not in train_help


def test_compare_and_rerun_share_tolerance_names_and_rule():
    def tolerances(name):
        parser = cli.build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        return {a.dest: a for a in sub._actions if a.dest.endswith("_tol")}

    compare, rerun = tolerances("compare"), tolerances("rerun")
    assert set(compare) == set(rerun) == {"rel_tol", "abs_tol"}
    for dest in compare:
        assert compare[dest].option_strings == rerun[dest].option_strings
        assert compare[dest].help == rerun[dest].help
        assert compare[dest].type is rerun[dest].type
    r = _run("compare", "a", "b", "--abs-tol", "-1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--abs-tol" in r.stderr


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("repro.data.fashion_mnist", "data fashion-mnist"),
        ("repro.data.latents", "data latents"),
        ("repro.metrics.fid", "reference"),
        ("repro.metrics.featurenet", "featurenet"),
        ("repro.metrics.ladder", "ladder"),
        ("repro.metrics.adm", "adm"),
        ("repro.experiments.fidnoise", "fidnoise"),
    ],
)
def test_a_python_m_entry_is_its_repro_command(module, command):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: repro {command} "), r.stdout + r.stderr


def test_a_python_m_entry_reports_bad_input_as_its_command_does():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["-m", "repro.experiments.fidnoise", "runs/none", "--num", "6", "--out", "none.json"]
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "repro fidnoise: error: --num: 6 is not allowed; must be a multiple of 4, >= 8 (it is split in quarters)"
    )
    r = subprocess.run([sys.executable, "-m", "repro.metrics.fid", "--help"], cwd=ROOT, env=env, capture_output=True)
    assert b"--out OUT, --reference-report OUT" in r.stdout  # dvc.yaml's former spelling still parses
