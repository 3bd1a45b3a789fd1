"""cdk-nag acknowledgements ("suppressions"), each with the reason written next to the rule it silences.

Every stack is checked against the AwsSolutions pack (cdk-nag 3 runs as a CDK validation plugin, see
`cdk/app.py`): an unacknowledged finding fails the synthesis. A finding is fixed in the stack where that is
sensible; where it is a deliberate trade-off it is acknowledged here, on the one construct it concerns (and
that construct's children), with a reason a reviewer can judge. The stack tests read the validation report
and fail on an unacknowledged finding and on a reason too short to say anything.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

# Shorter than this is a label, not a reason ("not needed", "sandbox only").
MIN_REASON_LENGTH = 40


def suppress(construct: IConstruct, rule: str, reason: str, *, applies_to: str | None = None) -> None:
    """Acknowledge AwsSolutions `rule` (e.g. "AwsSolutions-S1") on `construct` and its children, saying why.

    `applies_to` narrows an IAM finding to the one wildcard it is about (e.g. "Resource::*"), so a wildcard
    added later is still reported: cdk-nag 3 spells that `AwsSolutions-IAM5[Resource::*]`.
    """
    if not rule.startswith("AwsSolutions-") or "[" in rule:
        raise ValueError(f"suppress() takes a bare AwsSolutions rule id, got {rule!r}")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"the reason for suppressing {rule} must say why (at least {MIN_REASON_LENGTH} characters)")
    rule_id = f"{rule}[{applies_to}]" if applies_to else rule
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
