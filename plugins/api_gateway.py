"""The ``api_gateway`` check: the API stage's health route answers 200 (the stage, the integration and the
health Lambda's alias are wired), and the login route refuses a malformed body with 400 (the login Lambda
runs and validates its input; a 200 would mean it logged someone in without a password, a 500 that it is
broken or misconfigured).

Depends on no other check. Creates nothing: the malformed login names no real user and carries no password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.checks import Check, CheckContext, CheckResult, shown_url
from deploykit.hookspecs import hookimpl
from plugins._support import (
    Cleanup,
    Failed,
    call,
    json_object,
    ms,
    require,
    run_check_body,
    unexpected,
)

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

NAME = "api_gateway"
TIMEOUT = 30.0  # two Lambda cold starts
MALFORMED_LOGIN = {"username": "deploykit-smoke-malformed@example.com"}  # no password


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [
        Check(
            NAME,
            run,
            description="GET the API's health route → 200; POST a malformed login → 400",
            timeout=TIMEOUT,
        )
    ]


def run(ctx: CheckContext) -> CheckResult:
    return run_check_body(NAME, ctx, _body)


def _body(ctx: CheckContext, cleanup: Cleanup) -> str:
    endpoints = ctx.endpoints
    require(endpoints, "api_health_url", "login_url")

    response, health_ms = call(ctx.http, "GET", endpoints.api_health_url)
    version = json_object(response, f"GET {shown_url(endpoints.api_health_url)}").get("function_version")

    label = f"POST {shown_url(endpoints.login_url)} with no password"
    response, login_ms = call(ctx.http, "POST", endpoints.login_url, expect=None, what=label, json_body=MALFORMED_LOGIN)
    if response.status == 200:
        raise Failed(unexpected(label, response, 400, "the login accepted a body without a password"))
    if response.status != 400:
        raise Failed(unexpected(label, response, 400))
    answered = f" (version {version})" if version else ""
    return f"GET health 200 in {ms(health_ms)}{answered}; malformed login → 400 in {ms(login_ms)}"
