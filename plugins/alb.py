"""The ``alb`` check: the service's target group has a healthy target, and ``GET /health`` through the ALB
answers 200 ``{"status": "ok"}``.

Both are looked at even when the first fails, so a stopped backend reads as "no healthy target in
car-rental-tg: 1 unhealthy (Target.FailedHealthChecks); GET http://…/health → 503 (expected 200): …".
Depends on no other check. Creates nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.hookspecs import hookimpl
from plugins._support import Cleanup, Failed, body_start, call, join_url, json_object, ms, require, run_check_body

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

NAME = "alb"
TIMEOUT = 20.0


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [
        Check(
            NAME,
            run,
            description="a healthy target in the service's target group, and GET /health through the ALB is ok",
            timeout=TIMEOUT,
        )
    ]


def run(ctx: CheckContext) -> CheckResult:
    return run_check_body(NAME, ctx, _body)


def target_group_name(arn: str) -> str:
    """``car-rental-tg`` from ``arn:aws:elasticloadbalancing:…:targetgroup/car-rental-tg/0123abcd``."""
    resource = arn.rsplit(":", 1)[-1]
    parts = resource.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "targetgroup" else arn


def target_health(elbv2: Any, arn: str) -> tuple[int, str]:
    """(healthy targets, a summary of the others such as ``1 unhealthy (Target.FailedHealthChecks)``)."""
    descriptions = elbv2.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions") or []
    states: Counter[str] = Counter()
    reasons: dict[str, set[str]] = {}
    for description in descriptions:
        health = description.get("TargetHealth") or {}
        state = str(health.get("State") or "unknown")
        states[state] += 1
        if health.get("Reason"):
            reasons.setdefault(state, set()).add(str(health["Reason"]))
    others = ", ".join(
        f"{count} {state}" + (f" ({', '.join(sorted(reasons[state]))})" if state in reasons else "")
        for state, count in sorted(states.items())
        if state != "healthy"
    )
    return states["healthy"], others


def _body(ctx: CheckContext, cleanup: Cleanup) -> str:
    endpoints = ctx.endpoints
    require(endpoints, "alb_url", "target_group_arn")
    group = target_group_name(endpoints.target_group_arn)
    problems: list[str] = []

    healthy, others = 0, ""
    try:
        healthy, others = target_health(ctx.aws.client("elbv2"), endpoints.target_group_arn)
    except Exception as exc:  # still try the HTTP side: both reasons in one line
        problems.append(f"cannot read the target health of {group}: {type(exc).__name__}: {exc}")
    else:
        if not healthy:
            problems.append(f"no healthy target in {group}: {others or 'no target registered'}")

    url = join_url(endpoints.alb_url, "health")
    took = 0.0
    try:
        response, took = call(ctx.http, "GET", url)
        status = json_object(response, f"GET {url}").get("status")
        if status != "ok":
            problems.append(f"GET {url} → 200 but status {status!r} (expected 'ok'): {body_start(response)}")
    except Failed as exc:
        problems.append(str(exc))

    if problems:
        raise Failed("; ".join(problems))
    targets = f"{healthy} healthy target{'s' if healthy != 1 else ''} in {group}" + (f" ({others})" if others else "")
    return f"{targets}; GET /health 200 in {ms(took)}"
