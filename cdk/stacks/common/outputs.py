"""Stack outputs: the contract between the stacks and deploykit (endpoints, names, ids).

deploykit resolves an environment's endpoints from these outputs, so an output's key is part of the stack's
public interface: rename one only together with the code that reads it.
"""

from __future__ import annotations

from aws_cdk import CfnOutput
from constructs import Construct


def output(scope: Construct, key: str, value: str, description: str) -> CfnOutput:
    """A stack output whose CloudFormation key is exactly `key` (a top-level construct id keeps its name)."""
    return CfnOutput(scope, key, value=value, description=description)
