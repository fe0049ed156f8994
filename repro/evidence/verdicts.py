"""The verdicts a claim can get, and a claim's result: its verdict, evidence and how to re-check it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import Spec

CONFIRMED, REFUTED, INCONCLUSIVE = "confirmed", "refuted", "inconclusive"
NOT_SUPPORTED, DOES_NOT_GENERATE = "not supported", "does not yet generate"
NOT_CHECKABLE, OUT_OF_SCOPE, PENDING = "not checkable at this scale", "out of scope", "pending"
CHECK_FAILED = "check failed"
VERDICTS = (
    CONFIRMED,
    REFUTED,
    NOT_SUPPORTED,
    INCONCLUSIVE,
    DOES_NOT_GENERATE,
    NOT_CHECKABLE,
    OUT_OF_SCOPE,
    PENDING,
)


@dataclass
class Result:
    spec: Spec
    verdict: str
    evidence: list[str] = field(default_factory=list)
    recheck: str = ""
    scale: str | None = None
    scope: str | None = None
    """Scale and training length of an experiment verdict (``micro, 0.26 epochs``): part of the verdict's text."""
    amended: bool = False
    """The spec's deciding fields changed after its data was committed: the verdict says so."""
    family: dict[str, Any] | None = None
    """An experiment test that takes part in the family-wise adjustment: ``key`` (one per distinct test), ``test``
    (its p-values) and ``if_hold``; set by the rules, consumed by :func:`repro.evidence.rules.apply_holm`."""

    @property
    def text(self) -> str:
        """The verdict as the ledger states it: with its scope for experiments (``not supported at micro, ...``) and
        ``(amended after the data)`` where the spec's deciding fields changed after its data."""
        if not self.scope:
            text = self.verdict
        elif self.verdict == NOT_CHECKABLE:
            text = f"{self.verdict} ({self.scope})"
        else:
            text = f"{self.verdict} at {self.scope}"
        return f"{text} (amended after the data)" if self.amended else text

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        out = {
            "id": s.id,
            "kind": s.kind,
            "source": s.source,
            "claim": s.claim,
            "verdict": self.text,
            "outcome": self.verdict,
            "scale": self.scale,
            "evidence": self.evidence,
            "recheck": self.recheck,
        }
        if s.note:
            out["note"] = s.note
        if s.reason:
            out["reason"] = s.reason
        return out
