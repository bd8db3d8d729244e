"""Suppressions: findings a team has looked at and waived, for a reason, until a date.

They live in the repository (``.conveyor-suppressions.yaml`` by default), so a waiver
is reviewed like code::

    suppressions:
      - fingerprint: 3f2a9c…            # one finding, as the findings API shows it
        reason: the input is a constant
        expires: 2027-03-31
      - rule: B602                      # or a rule, anywhere under a path (a glob)
        path: scripts/*.py
        reason: build scripts run only on our machines
        expires: 2027-01-15

``reason`` and ``expires`` are required. A suppression counts up to and including its
expiry date; after that the findings it matched count again, and the step's log says
which suppression expired.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.orchestrator.errors import SuppressionError

from .results import Finding

DEFAULT_FILE = ".conveyor-suppressions.yaml"


class Suppression(BaseModel):
    """One waiver: a fingerprint, or a rule (optionally under a path glob)."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str | None = None
    rule: str | None = None
    path: str | None = Field(default=None, description="A glob on the finding's location.")
    reason: str = Field(min_length=1)
    expires: date

    @model_validator(mode="after")
    def _target(self) -> Suppression:
        if not self.fingerprint and not self.rule:
            raise ValueError("a suppression names a fingerprint or a rule")
        return self

    def matches(self, finding: Finding) -> bool:
        """True when this waiver is about ``finding``."""
        if self.fingerprint:
            return finding.fingerprint == self.fingerprint
        if finding.rule_id != self.rule:
            return False
        return self.path is None or fnmatch.fnmatchcase(finding.location, self.path)

    def describe(self) -> str:
        """``rule B602 under scripts/*.py`` / ``fingerprint 3f2a…``."""
        if self.fingerprint:
            return f"fingerprint {self.fingerprint}"
        return f"rule {self.rule}" + (f" under {self.path}" if self.path else "")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suppressions: list[Suppression] = Field(default_factory=list)


@dataclass(frozen=True)
class Applied:
    """Findings with waivers applied, and the expired waivers that matched something."""

    findings: list[Finding]
    expired: list[tuple[Suppression, int]]


def parse(text: str, where: str = DEFAULT_FILE) -> list[Suppression]:
    """Read a suppressions file; SuppressionError says which entry is wrong and why."""
    try:
        data: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise SuppressionError(f"{where} is not YAML: {exc}") from exc
    try:
        return _File.model_validate(data or {}).suppressions
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SuppressionError(f"{where}: {problems}") from exc


def apply(findings: Sequence[Finding], waivers: Sequence[Suppression], today: date) -> Applied:
    """Mark findings an active waiver matches; report expired waivers that matched."""
    result: list[Finding] = []
    expired: dict[int, int] = {}
    for finding in findings:
        active = next((w for w in waivers if w.expires >= today and w.matches(finding)), None)
        for position, waiver in enumerate(waivers):
            if waiver.expires < today and waiver.matches(finding):
                expired[position] = expired.get(position, 0) + 1
        waived = finding.model_copy(update={"suppressed": active.reason}) if active else finding
        result.append(waived)
    return Applied(result, [(waivers[i], n) for i, n in sorted(expired.items())])
