"""The environment's deploy dashboard: what deploykit puts in CloudWatch after each deploy run, drawn.

deploykit (deploykit/metrics.py) puts these metrics in namespace `deploykit` after every run it records; the
names and dimensions below are that contract (an integration test reads this dashboard back from the sandbox
and checks each metric against what a deploy put). `inv report` gives the same figures from the history.
"""

from __future__ import annotations

import re

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from constructs import Construct

from stacks.common.settings import Settings

NAMESPACE = "deploykit"
COUNTS = ("Deployments", "FailedRuns", "Rollbacks")  # each with the dimension Environment
CHAINS = ("app", "lambda", "stack", "mixed", "full")  # DeploySeconds by Environment and Chain
# The steps of the chains a developer waits on (StepSeconds by Environment and Step); each stack's
# deploy-stack:<name> is added from the settings.
APP_STEPS = ("build", "push", "register-taskdef", "roll-service", "wait-healthy", "smoke", "watch-errors")
LAMBDA_STEPS = ("upload-lambda", "update-code", "publish-version", "canary", "move-alias")
# DESIGN.md's goals on AWS, drawn on the chain graph.
GOALS = {"app": 75, "lambda": 15}
PERIOD = Duration.hours(1)


def dashboard_name(settings: Settings) -> str:
    """car-rental-<environment>-deploys, with what a dashboard name may not hold made a dash."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"car-rental-{settings.environment}-deploys")


def _metric(settings: Settings, name: str, statistic: str, label: str, **dimensions: str) -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"Environment": settings.environment, **dimensions},
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def deploy_dashboard(scope: Construct, settings: Settings) -> cw.Dashboard:
    """The dashboard: counts over the chosen time range, then per hour, then each chain's and step's times."""
    counts = [_metric(settings, name, "Sum", name) for name in COUNTS]
    chains = [_metric(settings, "DeploySeconds", "p50", f"{c} p50", Chain=c) for c in CHAINS]
    steps = [_metric(settings, "StepSeconds", "p50", s, Step=s) for s in (*APP_STEPS, *LAMBDA_STEPS)]
    stacks = [_metric(settings, "StepSeconds", "p50", "synth", Step="synth")] + [
        _metric(settings, "StepSeconds", "p50", name, Step=f"deploy-stack:{name}") for name in settings.stack_names
    ]
    dashboard = cw.Dashboard(
        scope,
        "DeployDashboard",
        dashboard_name=dashboard_name(settings),
        default_interval=Duration.days(7),
    )
    dashboard.add_widgets(
        cw.TextWidget(
            markdown=(
                f"# Deploys of {settings.environment}\n"
                "Each deploy run deploykit records (`inv deploy.*`, `inv rollback`), from namespace `deploykit`. "
                "`inv report` gives the same figures from the deployment history, with the failures' messages."
            ),
            width=24,
            height=2,
        )
    )
    dashboard.add_widgets(
        cw.SingleValueWidget(
            title="In the time range",
            metrics=counts,
            set_period_to_time_range=True,
            width=24,
            height=3,
        )
    )
    dashboard.add_widgets(
        cw.GraphWidget(title="Deploy runs per hour", left=counts, width=12, height=6, stacked=True),
        cw.GraphWidget(
            title="Wall time of successful deploy runs, by chain (s)",
            left=chains,
            left_annotations=[cw.HorizontalAnnotation(value=v, label=f"{c} goal") for c, v in GOALS.items()],
            width=12,
            height=6,
        ),
    )
    dashboard.add_widgets(
        cw.GraphWidget(title="App and Lambda steps, median (s)", left=steps, width=12, height=6),
        cw.GraphWidget(title="Synthesis and stack deploys, median (s)", left=stacks, width=12, height=6),
    )
    return dashboard
