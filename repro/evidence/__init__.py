"""The evidence layer: claim specs, the goldens they query, the verdict rules and the claims ledger.

One concept per module, in the order data flows through them:

* :mod:`.schema`: the spec's declared schema (``specs/<id>.yaml``) and its checker;
* :mod:`.goldens`: lookups into the golden JSON files (dotted paths, a query's methods and scope);
* :mod:`.verdicts`: the verdicts a claim can get and a claim's :class:`~.verdicts.Result`;
* :mod:`.rules`: how audit expectations and experiment queries become verdicts;
* :mod:`.structure`: structure claims, their tests run in one pytest subprocess;
* :mod:`.report`: the ledger (``reports/claims.md`` and ``.json``), drift against it, and ``repro claims``.
"""

from .goldens import MISSING, keys_of, lookup
from .report import drift, evaluate_all, ledger, render_markdown, render_table, write_reports
from .rules import (
    ALPHA,
    Test,
    apply_holm,
    evaluate_audit,
    evaluate_experiment,
    experiment_test,
    experiment_verdict,
    holm,
)
from .schema import KINDS, SCALES, SPEC, Spec, SpecError, load_spec, load_specs, parse_spec
from .structure import collected_nodes, evaluate_structure, node_exists, run_pytest
from .verdicts import (
    CHECK_FAILED,
    CONFIRMED,
    DOES_NOT_GENERATE,
    INCONCLUSIVE,
    NOT_CHECKABLE,
    NOT_SUPPORTED,
    OUT_OF_SCOPE,
    PENDING,
    REFUTED,
    VERDICTS,
    Result,
)

__all__ = [
    "ALPHA",
    "CHECK_FAILED",
    "CONFIRMED",
    "DOES_NOT_GENERATE",
    "INCONCLUSIVE",
    "KINDS",
    "MISSING",
    "NOT_CHECKABLE",
    "NOT_SUPPORTED",
    "OUT_OF_SCOPE",
    "PENDING",
    "REFUTED",
    "SCALES",
    "SPEC",
    "VERDICTS",
    "Result",
    "Spec",
    "Test",
    "SpecError",
    "apply_holm",
    "collected_nodes",
    "drift",
    "evaluate_all",
    "evaluate_audit",
    "evaluate_experiment",
    "evaluate_structure",
    "experiment_test",
    "experiment_verdict",
    "holm",
    "keys_of",
    "ledger",
    "load_spec",
    "load_specs",
    "lookup",
    "node_exists",
    "parse_spec",
    "render_markdown",
    "render_table",
    "run_pytest",
    "write_reports",
]
