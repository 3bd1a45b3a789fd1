"""Deploy metrics in CloudWatch: each recorded run, as figures the environment's deploy dashboard graphs.

The history (deploykit.history) keeps every run whole; CloudWatch keeps numbers over time, which a dashboard can
draw and an alarm can watch. After each run deploykit puts, in namespace ``deploykit``:

- dimension ``Environment``: ``Deployments`` (successful deploy runs that changed something), ``FailedRuns``
  (failed deploy runs; a run a guard or bad input refused is neither) and ``Rollbacks`` (``inv rollback`` and
  automatic ones), each a count;
- dimensions ``Environment`` and ``Chain`` (app, lambda, stack, mixed, full; see deploykit.report):
  ``DeploySeconds``, the wall time of a successful deploy run that changed something;
- dimensions ``Environment`` and ``Step`` (build, push, wait-healthy, deploy-stack:<stack>...): ``StepSeconds``,
  each step that did something.

The registry stack's dashboard (cdk/stacks/registry_stack.py) reads exactly these; an integration test holds the
two together. ``metrics = false`` in an environment of deploy.toml turns them off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deploykit.config import EnvConfig
from deploykit.history import Record, step_name
from deploykit.report import GROUPS, NOT_DEPLOYS, ROLLBACKS, chain, changed, verb

NAMESPACE = "deploykit"
DASHBOARD_OUTPUT = "DeployDashboardName"  # the registry stack's output naming its dashboard
PER_CALL = 1000  # PutMetricData's limit of metric data per request


def data(record: Record) -> list[dict[str, Any]]:
    """The metric data one recorded run contributes (PutMetricData's MetricData)."""
    when = datetime.fromisoformat(record.when)
    env = {"Name": "Environment", "Value": record.env}

    def datum(name: str, value: float, unit: str, *extra: dict[str, str]) -> dict[str, Any]:
        return {"MetricName": name, "Dimensions": [env, *extra], "Timestamp": when, "Value": value, "Unit": unit}

    found: list[dict[str, Any]] = []
    name = verb(record)
    if name in ROLLBACKS:
        if not record.refused:  # one a guard refused put nothing back
            found.append(datum("Rollbacks", 1, "Count"))
    elif name not in NOT_DEPLOYS and not record.refused:  # a refused run is neither a deployment nor a failure
        found += [
            datum("Deployments", int(record.ok and changed(record)), "Count"),
            datum("FailedRuns", int(not record.ok), "Count"),
        ]
        if record.ok and changed(record):
            found.append(datum("DeploySeconds", record.seconds, "Seconds", {"Name": "Chain", "Value": chain(record)}))
    for step in record.steps:
        label = step_name(step)
        if step.get("status") == "done" and label not in GROUPS:
            seconds = float(step.get("seconds", 0.0))
            found.append(datum("StepSeconds", seconds, "Seconds", {"Name": "Step", "Value": label}))
    return found


def publish(cloudwatch: Any, record: Record) -> int:
    """Put the run's metric data; how many were put. (An environment with ``metrics = false`` is not asked here.)"""
    found = data(record)
    for start in range(0, len(found), PER_CALL):
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=found[start : start + PER_CALL])
    return len(found)


def dashboard_link(env: EnvConfig, name: str) -> str:
    """Where to see the dashboard: the CloudWatch console on AWS; its name on the sandbox, which has no console."""
    if env.is_local:
        return (
            f"CloudWatch dashboard {name} (the sandbox has no console: aws --endpoint-url {env.endpoint_url} "
            f"cloudwatch get-dashboard --dashboard-name {name} reads it)"
        )
    return (
        f"https://{env.region}.console.aws.amazon.com/cloudwatch/home?region={env.region}#dashboards/dashboard/{name}"
    )
