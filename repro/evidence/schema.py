"""The claim spec: its schema, declared as data (:data:`SPEC`), and the one checker that walks it.

A spec (read with the safe YAML loader, which refuses duplicate keys; validated on load) has these fields:

``id``
    The claim's id; the file is ``specs/<id>.yaml``.
``source``
    Who made the claim and where (paper section, table, figure, post).
``claim``
    The claim in one line.
``kind``
    ``structure`` (a property of the reference implementation, checked by tests), ``audit`` (arithmetic on
    counted parameters/MACs or published numbers, read from ``goldens/audit.json``), ``experiment`` (needs
    golden training runs) or ``out-of-scope``.
``reason``
    Required for ``out-of-scope``: why it cannot be checked honestly here.
``note``
    Optional: caveats a reader needs next to the verdict.
``amended``
    Experiment specs only, optional: each change of the deciding fields (``file``, ``value``, ``relation``,
    ``threshold``/``threshold_path``, ``margin``, ``min_seeds``, ``if_hold``, and what a named target means) made
    after the data of every method the spec names was committed: ``date`` (YYYY-MM-DD), ``commit`` (where known) and
    ``why``. ``tests/test_preregistration.py`` checks the list against the history. The verdict then says "amended
    after the data".
``registered``
    With ``amended``: the deciding query as first registered (``commit``, ``file``, ``value``, ``relation``,
    ``threshold`` or ``threshold_path``, optional ``margin``), evaluated on the same goldens and shown beside the
    verdict, never deciding.
``check``
    How the claim is checked; its fields depend on the kind:

    structure
        ``tests``: pytest node ids (``tests/test_x.py::test_name``). ``if_pass``: the verdict when they all
        pass (``confirmed``, or ``refuted`` when the tests establish the opposite of the claim).
    audit
        ``expect``: a list of expectations, each ``quantity`` (a dotted path into ``goldens/audit.json``),
        ``relation`` (one of ``== ~= < <= > >=``), ``value`` (a number, or true/false for ``==``),
        ``rel_tol`` or ``abs_tol`` (only with ``~=``, exactly one), and optional ``label``, ``unit`` and
        ``format`` (a Python format spec, default ``.4g``). ``evidence``: optional quantities to show
        (``quantity``, ``label``, ``unit``, ``format``). ``if_hold``: the verdict when every expectation
        holds (default ``confirmed``); if any fails the verdict is the other one of confirmed/refuted.
    experiment
        A query into the golden runs' JSON: ``scales`` (preferred first, from ``smoke micro micro-long small paper``),
        ``file`` (under ``goldens/<scale>/``, default ``speedup.json``), ``value`` (a dotted path, or a list of keys
        when a key holds a dot), ``relation`` (``> >= < <=``), and either ``threshold`` (a number) or ``threshold_path``
        (a second path in the same file). ``min_seeds`` (default 3), ``if_hold`` (default ``confirmed``) and ``margin``
        (default 0: a relative non-inferiority margin for a comparison of seed samples, see :mod:`repro.evidence.rules`)
        are optional. The first listed scale whose file exists is used. ``also``: optional ``{file, value}`` queries
        into the same scale's goldens (a second metric, e.g. FID next to the validation loss), evaluated the same way
        (or with their own ``relation`` and number ``threshold``) and shown in the evidence, never deciding. ``shares``:
        optional, a ``whole`` and its ``parts``, each a ``{file, value, label}`` speedup record: the evidence shows what
        share of the whole's log speedup each part's is (for example the routing's and the objective's shares of TREAD's
        speedup over DiT), never deciding.

:func:`parse_spec` walks :data:`SPEC` and stops at the first field that does not fit, with one line naming the
file, the dotted field, the value and what is allowed; it fills the defaults above. A schema node is a
:class:`Text`, :class:`Choice`, :class:`Number`, :class:`Integer`, :class:`Pattern`, :class:`Query`,
:class:`FormatSpec`, :class:`ListOf`, a :class:`Record` (named fields, each required, defaulted or optional,
and cross-field rules) or :class:`ByKind` (the ``check`` record, whose fields depend on ``kind``).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import read_yaml
from ..validation import ValidationError, check_choice, check_int, check_real, invalid
from .verdicts import CONFIRMED, REFUTED

KINDS = ("structure", "audit", "experiment", "out-of-scope")
SCALES = ("smoke", "micro", "micro-long", "small", "paper")
AUDIT_RELATIONS = ("==", "~=", "<", "<=", ">", ">=")
EXPERIMENT_RELATIONS = ("<", "<=", ">", ">=")
DEFAULT_SPECS = Path("specs")


class SpecError(ValidationError):
    """A spec that does not follow the schema; the message names the file, the field, the value and what is allowed."""


@dataclass(frozen=True)
class Spec:
    id: str
    source: str
    claim: str
    kind: str
    check: Mapping[str, Any] | None
    reason: str | None
    note: str | None
    path: Path
    amended: tuple[Mapping[str, Any], ...] = ()
    """Changes of the deciding fields after the data (``date``, ``commit``, ``why``), oldest first."""
    registered: Mapping[str, Any] | None = None
    """The deciding fields first registered (``commit``, ``file``, ``value``, ``relation``, threshold), evaluated
    beside the amended test."""


# ------------------------------------------------------------------------------------------------------------
# The checker's nodes
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class At:
    """Where the checker stands: the spec file, the dotted field and the record that holds it."""

    path: Path
    name: str = ""
    record: Mapping[str, Any] | None = None

    def child(self, key: str | int, record: Mapping[str, Any] | None = None) -> At:
        name = f"{self.name}[{key}]" if isinstance(key, int) else f"{self.name}.{key}" if self.name else key
        return At(self.path, name, record)

    @property
    def field(self) -> str:
        return f"{self.path}: field '{self.name or '(top level)'}'"

    def fail(self, value: Any, allowed: str) -> SpecError:
        return SpecError(str(invalid(self.field, value, f"allowed: {allowed}")))

    def run(self, check: Callable[..., None], value: Any, **limits: Any) -> Any:
        """``check(field, value, **limits)``, one of :mod:`repro.validation`'s, its error as a :class:`SpecError`."""
        try:
            check(self.field, value, **limits)
        except ValidationError as e:
            raise SpecError(str(e)) from None
        return value

    def missing(self, key: str, why: str = "it is required") -> SpecError:
        return SpecError(f"{self.path}: field '{self.child(key).name}' is missing; {why}")


class Node:
    def check(self, value: Any, at: At) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Node):
    one_line: bool = False

    def check(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or not value.strip():
            raise at.fail(value, "a non-empty string")
        if self.one_line and "\n" in value.strip():
            raise at.fail(value, "a single line")
        return value.strip()


@dataclass(frozen=True)
class Choice(Node):
    values: tuple[str, ...]

    def check(self, value: Any, at: At) -> Any:
        return at.run(check_choice, value, allowed=self.values)


@dataclass(frozen=True)
class Number(Node):
    """A finite real number (``>= minimum`` if given); ``bool_when(record)`` says when true/false are allowed too."""

    bool_when: Callable[[Mapping[str, Any]], bool] | None = None
    minimum: float | None = None

    def check(self, value: Any, at: At) -> Any:
        if isinstance(value, bool) and self.bool_when is not None and self.bool_when(at.record or {}):
            return value
        return at.run(check_real, value, ge=self.minimum)


@dataclass(frozen=True)
class Fraction(Node):
    """A real number in [0, 1): a relative margin."""

    def check(self, value: Any, at: At) -> float:
        at.run(check_real, value, ge=0.0)
        if value >= 1:
            raise at.fail(value, "a number in [0, 1)")
        return float(value)


@dataclass(frozen=True)
class Integer(Node):
    minimum: int = 1

    def check(self, value: Any, at: At) -> int:
        return at.run(check_int, value, low=self.minimum)


@dataclass(frozen=True)
class Pattern(Node):
    regex: str
    allowed: str

    def check(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or not re.match(self.regex, value):
            raise at.fail(value, self.allowed)
        return value


@dataclass(frozen=True)
class Query(Node):
    """A path into a JSON file: ``a.b.c``, or a list of keys when a key holds a dot."""

    def check(self, value: Any, at: At) -> Any:
        if isinstance(value, str) and value and all(value.split(".")):
            return value
        if isinstance(value, list) and value and all(isinstance(k, str) and k for k in value):
            return value
        raise at.fail(value, "a dotted path such as 'a.b.c' or a list of keys")


@dataclass(frozen=True)
class FormatSpec(Node):
    """A Python format spec that formats both a float and an int."""

    def check(self, value: Any, at: At) -> str:
        Text().check(value, at)
        for sample in (1.5, 1):
            try:
                format(sample, value)
                return value
            except ValueError:
                pass
        raise at.fail(value, "a Python format spec for numbers, such as '.4g', '.2%' or ',d'")


@dataclass(frozen=True)
class ListOf(Node):
    item: Node
    allowed: str
    non_empty: bool = True

    def check(self, value: Any, at: At) -> list:
        if not isinstance(value, list) or (self.non_empty and not value):
            raise at.fail(value, self.allowed)
        return [self.item.check(v, at.child(i)) for i, v in enumerate(value)]


REQUIRED = object()
"""The default of a field that must be given."""
_ABSENT = object()
"""The default of an optional field that stays absent when it is not given."""


@dataclass(frozen=True)
class Record(Node):
    """A mapping with known fields (``{name: (node, default)}``, ``REQUIRED`` for a field that must be given; a
    field without a default that is absent stays absent) and cross-field ``rules(record, at)``, run after the
    fields, in order."""

    fields: Mapping[str, tuple[Node, Any]]
    rules: tuple[Callable[[dict[str, Any], At], None], ...] = ()

    def check(self, value: Any, at: At) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise at.fail(value, "a mapping")
        for key in value:
            if key not in self.fields:
                known = ", ".join(self.fields)
                raise at.child(key).fail(value[key], f"known fields of {at.name or 'a spec'}: {known}")
        for key, (_, default) in self.fields.items():
            if default is REQUIRED and key not in value:
                raise at.missing(key)
        out: dict[str, Any] = {}
        for key, (node, default) in self.fields.items():
            if key in value:
                out[key] = node.check(value[key], at.child(key, value))
            elif default is not REQUIRED and default is not _ABSENT:
                out[key] = default
        for rule in self.rules:
            rule(out, at)
        return out


@dataclass(frozen=True)
class ByKind(Node):
    """The ``check`` record: its schema is chosen by the spec's ``kind``; ``None`` for a kind without a check."""

    cases: Mapping[str, Record | None]

    def check(self, value: Any, at: At) -> Any:
        kind = (at.record or {}).get("kind")
        schema = self.cases.get(kind)
        if schema is None:
            return value  # the spec's rules refuse a check where the kind has none
        return schema.check(value, at)


# ------------------------------------------------------------------------------------------------------------
# The spec
# ------------------------------------------------------------------------------------------------------------

VERDICT = Choice((CONFIRMED, REFUTED))
JSON_NAME, IN_SCALE = r"^(?!\.)[^/]*\.json\Z", "a JSON file name inside goldens/<scale>/"
SPEC_ID = r"^[a-z0-9][a-z0-9.\-]*$"
NODE_ID = r"^[\w./\-]+\.py(::[\w\-\[\].]+)+$"


def _tolerance(e: dict[str, Any], at: At) -> None:
    tols = [k for k in ("rel_tol", "abs_tol") if k in e]
    if e["relation"] == "~=" and len(tols) != 1:
        raise at.child("relation").fail(e["relation"], "'~=' with exactly one of rel_tol or abs_tol")
    if e["relation"] != "~=" and tols:
        raise at.child(tols[0]).fail(e[tols[0]], "a tolerance only with relation '~='")


def _one_threshold(c: dict[str, Any], at: At) -> None:
    if ("threshold" in c) == ("threshold_path" in c):
        raise at.child("threshold").fail(c.get("threshold"), "exactly one of threshold or threshold_path")


_LABEL = {"label": (Text(one_line=True), _ABSENT), "unit": (Text(one_line=True), _ABSENT)}

EXPECTATION = Record(
    {
        "quantity": (Query(), REQUIRED),
        "relation": (Choice(AUDIT_RELATIONS), REQUIRED),
        "value": (Number(bool_when=lambda e: e.get("relation") == "=="), REQUIRED),
        "rel_tol": (Number(minimum=0), _ABSENT),
        "abs_tol": (Number(minimum=0), _ABSENT),
        **_LABEL,
        "format": (FormatSpec(), _ABSENT),
    },
    rules=(_tolerance,),
)

SHOWN = Record({"quantity": (Query(), REQUIRED), **_LABEL, "format": (FormatSpec(), _ABSENT)})

STRUCTURE = Record(
    {
        "tests": (
            ListOf(
                Pattern(NODE_ID, "a pytest node id such as 'tests/test_x.py::test_name'"),
                "a non-empty list of pytest node ids",
            ),
            REQUIRED,
        ),
        "if_pass": (VERDICT, REQUIRED),
    }
)

AUDIT = Record(
    {
        "expect": (ListOf(EXPECTATION, "a non-empty list of expectations"), REQUIRED),
        "evidence": (ListOf(SHOWN, "a list of quantities to show", non_empty=False), []),
        "if_hold": (VERDICT, CONFIRMED),
    }
)

SHARE_ITEM = Record(
    {
        "file": (Pattern(JSON_NAME, IN_SCALE), REQUIRED),
        "value": (Query(), REQUIRED),
        "label": (Text(one_line=True), REQUIRED),
    }
)

EXPERIMENT = Record(
    {
        "scales": (ListOf(Choice(SCALES), f"a non-empty list from: {', '.join(SCALES)}"), REQUIRED),
        "file": (
            Pattern(JSON_NAME, "a JSON file name inside goldens/<scale>/, such as 'speedup.json'"),
            "speedup.json",
        ),
        "value": (Query(), REQUIRED),
        "relation": (Choice(EXPERIMENT_RELATIONS), REQUIRED),
        "threshold": (Number(), _ABSENT),
        "threshold_path": (Query(), _ABSENT),
        "min_seeds": (Integer(minimum=1), 3),
        "if_hold": (VERDICT, CONFIRMED),
        "margin": (Fraction(), 0.0),
        "also": (
            ListOf(
                Record(
                    {
                        "file": (Pattern(JSON_NAME, IN_SCALE), REQUIRED),
                        "value": (Query(), REQUIRED),
                        "relation": (Choice(EXPERIMENT_RELATIONS), _ABSENT),
                        "threshold": (Number(), _ABSENT),
                        "threshold_path": (Query(), _ABSENT),
                    }
                ),
                "a list of {file, value} queries (optionally with their own relation and threshold) shown next to "
                "the verdict",
                non_empty=False,
            ),
            [],
        ),
        "shares": (
            Record(
                {
                    "whole": (SHARE_ITEM, REQUIRED),
                    "parts": (ListOf(SHARE_ITEM, "a non-empty list of {file, value, label} speedups"), REQUIRED),
                }
            ),
            _ABSENT,
        ),
    },
    rules=(_one_threshold,),
)


COMMIT = Pattern(r"^[0-9a-f]{7,40}$", "a git commit (7 to 40 hex digits)")


@dataclass(frozen=True)
class Date(Node):
    """A calendar date, YYYY-MM-DD (YAML reads an unquoted one as a date), kept as its ISO string."""

    def check(self, value: Any, at: At) -> str:
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value.isoformat()
        if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}\Z", value):
            try:
                return datetime.date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise at.fail(value, "a date YYYY-MM-DD")


DATE = Date()

AMENDMENT = Record({"date": (DATE, REQUIRED), "commit": (COMMIT, _ABSENT), "why": (Text(one_line=True), REQUIRED)})

REGISTERED = Record(
    {
        "commit": (COMMIT, REQUIRED),
        "file": (Pattern(JSON_NAME, IN_SCALE), REQUIRED),
        "value": (Query(), REQUIRED),
        "relation": (Choice(EXPERIMENT_RELATIONS), REQUIRED),
        "threshold": (Number(), _ABSENT),
        "threshold_path": (Query(), _ABSENT),
        "margin": (Fraction(), _ABSENT),
    },
    rules=(_one_threshold,),
)


def _amended_with_registration(spec: dict[str, Any], at: At) -> None:
    if ("amended" in spec or "registered" in spec) and spec["kind"] != "experiment":
        field = "amended" if "amended" in spec else "registered"
        raise at.child(field).fail(spec[field], "amendments only for kind 'experiment'")
    if "registered" in spec and "amended" not in spec:
        raise at.missing("amended", "a spec with a 'registered' test lists the amendments that replaced it")


def _id_is_the_file_name(spec: dict[str, Any], at: At) -> None:
    if at.path.suffix == ".yaml" and at.path.stem != spec["id"]:
        raise at.child("id").fail(spec["id"], f"the file's name without .yaml ({at.path.stem!r})")


def _check_fits_the_kind(spec: dict[str, Any], at: At) -> None:
    kind = spec["kind"]
    if kind == "out-of-scope":
        if "reason" not in spec:
            raise at.missing("reason", "it is required for kind 'out-of-scope'")
        if "check" in spec:
            raise at.child("check").fail(spec["check"], "no check for kind 'out-of-scope' (give the reason instead)")
        return
    if "reason" in spec:
        raise at.child("reason").fail(spec["reason"], "a reason only for kind 'out-of-scope'")
    if "check" not in spec:
        raise at.missing("check", f"it is required for kind '{kind}'")


SPEC = Record(
    {
        "id": (
            Pattern(
                r"^[a-z0-9][a-z0-9.\-]*$", "lowercase letters, digits, '.' and '-', starting with a letter or digit"
            ),
            REQUIRED,
        ),
        "kind": (Choice(KINDS), REQUIRED),
        "source": (Text(one_line=True), REQUIRED),
        "claim": (Text(one_line=True), REQUIRED),
        "note": (Text(), _ABSENT),
        "reason": (Text(), _ABSENT),
        "check": (ByKind({"structure": STRUCTURE, "audit": AUDIT, "experiment": EXPERIMENT}), _ABSENT),
        "amended": (ListOf(AMENDMENT, "a non-empty list of {date, commit, why} amendments"), _ABSENT),
        "registered": (REGISTERED, _ABSENT),
    },
    rules=(_id_is_the_file_name, _check_fits_the_kind, _amended_with_registration),
)
"""The schema of a claim spec (see the module's docstring and ``specs/`` for examples)."""


def parse_spec(data: Any, path: str | os.PathLike) -> Spec:
    """Check one spec's data (as loaded from ``path``) against :data:`SPEC`; the spec with its defaults filled."""
    path = Path(path)
    s = SPEC.check(data, At(path))
    return Spec(
        id=s["id"],
        source=s["source"],
        claim=s["claim"],
        kind=s["kind"],
        check=s.get("check"),
        reason=s.get("reason"),
        note=s.get("note"),
        path=path,
        amended=tuple(s.get("amended", ())),
        registered=s.get("registered"),
    )


def load_spec(path: str | os.PathLike) -> Spec:
    path = Path(path)
    try:
        data = read_yaml(path)
    except ValueError as e:  # bad syntax or a key given twice
        raise SpecError(str(e)) from None
    return parse_spec(data, path)


def load_specs(directory: str | os.PathLike = DEFAULT_SPECS) -> list[Spec]:
    """Every ``*.yaml`` spec of ``directory``, checked, sorted by id. A spec saved as ``.yml`` is an error,
    not skipped: a claim that is silently left out of the ledger is worse than a failing one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"{directory}: not a folder of specs")
    misnamed = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yml", ".yaml") and p.suffix != ".yaml")
    if misnamed:
        raise SpecError(f"{misnamed[0]}: specs are read from <id>.yaml files; rename it to {misnamed[0].stem}.yaml")
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise SpecError(f"{directory}: no *.yaml specs found")
    return sorted((load_spec(p) for p in files), key=lambda s: s.id)
