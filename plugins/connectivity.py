"""The ``connectivity`` check: the backend reaches its dependencies, and they are the environment's.

``GET /health/deep`` on the ALB must answer 200 with every check ``ok`` (the KYC bucket, the three tables, the
user pool, each probed by the service itself with its own credentials). The ``target`` each check names must
be what the stacks output: a service still pointing at an old table or another environment's pool is a
failure ("the service uses table X for dynamodb:kyc, the stack outputs Y").

Depends on no other check. Creates nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.hookspecs import hookimpl
from plugins._support import (
    Cleanup,
    Failed,
    call,
    join_url,
    json_object,
    require,
    run_check_body,
    unexpected,
)

if TYPE_CHECKING:
    from deploykit.config import EnvConfig
    from deploykit.endpoints import Endpoints

NAME = "connectivity"
TIMEOUT = 30.0


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [
        Check(
            NAME,
            run,
            description="GET /health/deep: S3, DynamoDB and Cognito reachable, and the ones the stacks output",
            timeout=TIMEOUT,
        )
    ]


def run(ctx: CheckContext) -> CheckResult:
    return run_check_body(NAME, ctx, _body)


def expected_targets(endpoints: Endpoints) -> dict[str, tuple[str, str]]:
    """Deep-health check name → (what it is, the name the stacks output for it)."""
    return {
        "s3:kyc": ("bucket", endpoints.buckets.get("kyc", "")),
        "dynamodb:cars": ("table", endpoints.tables.get("cars", "")),
        "dynamodb:bookings": ("table", endpoints.tables.get("bookings", "")),
        "dynamodb:kyc": ("table", endpoints.tables.get("kyc", "")),
        "cognito:user_pool": ("user pool", endpoints.user_pool_id),
    }


def _latency(check: dict[str, Any]) -> str:
    value = check.get("latency_ms")
    return f"{value:.0f} ms" if isinstance(value, int | float) else "? ms"


def _body(ctx: CheckContext, cleanup: Cleanup) -> str:
    require(ctx.endpoints, "alb_url")
    url = join_url(ctx.endpoints.alb_url, "health/deep")
    label = f"GET {url}"
    response, _ = call(ctx.http, "GET", url, expect=None)
    if response.status not in (200, 503):  # 503 carries the failing checks: read them
        raise Failed(unexpected(label, response, 200))
    try:
        checks = json_object(response, label).get("checks")
    except Failed:  # an answer from the ALB itself (a 503 page with no healthy target), not from the service
        raise Failed(unexpected(label, response, 200)) from None
    if not isinstance(checks, dict) or not checks:
        raise Failed(unexpected(label, response, 200, "no checks in the answer"))

    expected = expected_targets(ctx.endpoints)
    failing: list[str] = []
    mismatches: list[str] = []
    for name in [n for n in expected if n not in checks]:
        failing.append(f"{name} missing from the answer")
    for name, answer in checks.items():
        check = answer if isinstance(answer, dict) else {}
        if check.get("status") != "ok":
            failing.append(f"{name} {check.get('status', '?')} ({check.get('error') or 'no error given'})")
        kind, wanted = expected.get(name, ("", ""))
        target = check.get("target")
        if wanted and target != wanted:
            mismatches.append(f"the service uses {kind} {target!r} for {name}, the stack outputs {wanted!r}")

    problems = []
    if failing:
        problems.append(f"{label} → {response.status}: " + ", ".join(failing))
    elif response.status != 200:
        problems.append(unexpected(label, response, 200, "though every check in it is ok"))
    problems += mismatches
    if problems:
        raise Failed("; ".join(problems))
    return ", ".join(f"{name} {_latency(check)}" for name, check in checks.items()) + " (all the stacks' own)"
