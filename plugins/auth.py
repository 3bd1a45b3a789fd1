"""The ``auth`` check: login works end to end and the backend really verifies tokens.

A throwaway Cognito user (``deploykit-smoke-<hex>@example.com``, random strong password, confirmed, no email
sent) logs in through the API's login route; ``GET /me`` on the ALB with its access token answers 200 naming
that user (its ``sub``); the same token with an altered signature answers 401. The user is deleted afterwards,
whatever happened.

Needs ``api_gateway`` (the login route works at all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.hookspecs import hookimpl
from plugins._support import (
    Cleanup,
    Failed,
    bearer,
    call,
    create_user,
    join_url,
    json_object,
    login,
    ms,
    require,
    run_check_body,
    tamper,
    unexpected,
)

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

NAME = "auth"
TIMEOUT = 45.0


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [
        Check(
            NAME,
            run,
            description="a throwaway user logs in through the API; GET /me accepts its token and refuses it tampered",
            timeout=TIMEOUT,
            needs=("api_gateway",),
        )
    ]


def run(ctx: CheckContext) -> CheckResult:
    return run_check_body(NAME, ctx, _body)


def _body(ctx: CheckContext, cleanup: Cleanup) -> str:
    endpoints = ctx.endpoints
    require(endpoints, "user_pool_id", "login_url", "alb_url")
    user = create_user(ctx.aws.client("cognito-idp"), endpoints.user_pool_id, cleanup)
    token, login_ms = login(ctx.http, endpoints.login_url, user)

    url = join_url(endpoints.alb_url, "me")
    response, me_ms = call(ctx.http, "GET", url, headers=bearer(token))
    me = json_object(response, f"GET {url}")
    if user.sub:
        if me.get("sub") != user.sub:
            raise Failed(
                f"GET {url} → 200 but names sub {me.get('sub')!r} (expected the throwaway user's sub {user.sub!r})"
            )
    elif me.get("username") not in (user.username, user.email):
        raise Failed(f"GET {url} → 200 but names {me.get('username')!r} (expected the throwaway user {user.email!r})")

    label = f"GET {url} with a tampered token"
    response, _ = call(ctx.http, "GET", url, headers=bearer(tamper(token)), expect=None, what=label)
    if response.status == 200:
        raise Failed(unexpected(label, response, 401, "the backend accepted a token whose signature was altered"))
    if response.status != 401:
        raise Failed(unexpected(label, response, 401))
    return f"login 200 in {ms(login_ms)}; GET /me 200 in {ms(me_ms)} names the throwaway user; tampered token → 401"
