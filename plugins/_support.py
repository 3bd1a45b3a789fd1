"""What the built-in plugins share: a setting naming an environment variable (:func:`variable_of`; their tables are
read with Config.plugin_settings, as any plugin's); and what the checks
share: URL joining, HTTP calls that fail with a one-line detail, safe body excerpts,
throwaway Cognito users, JWT helpers, and a runner that always cleans up.

A check's body is a function ``body(ctx, cleanup) -> detail``: it raises :class:`Failed` (or :class:`Skipped`)
with the one-line detail, registers what it creates with ``cleanup.add`` as soon as it exists, and returns the
detail of a pass. :func:`run_check_body` turns that into a :class:`~deploykit.checks.CheckResult` and runs the
cleanup in a ``finally``; a cleanup that fails turns the result into a failure saying what was left behind.

Nothing here puts a password, a token or a presigned URL's signature into a detail.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deploykit.checks import CheckResult, HttpError, HttpResponse, shown_url, without_queries
from deploykit.errors import ConfigError

if TYPE_CHECKING:
    from deploykit.checks import CheckContext, Http
    from deploykit.endpoints import Endpoints

REQUEST_TIMEOUT = 10.0  # seconds for one HTTP request; a check's own timeout is larger
EXCERPT = 160  # characters of a body quoted in a detail
SMOKE_USER_PREFIX = "deploykit-smoke-"
PASSWORD_SYMBOLS = "!#%*+-=?@^_~"  # all in Cognito's allowed special characters

_SENSITIVE_KEY = re.compile(r"token|password|secret|session|authorization|credential|signature", re.IGNORECASE)
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


class Failed(Exception):
    """Ends a check as failed; the message is its one-line detail."""


class Skipped(Exception):
    """Ends a check as skipped (nothing was created); the message says why."""


# -- URLs and bodies ------------------------------------------------------------------------------------


def variable_of(settings: Mapping[str, Any], key: str, default: str, where: str) -> str:
    """The setting ``key``: the name of an environment variable (a string); ConfigError otherwise."""
    variable = settings.get(key, default)
    if not isinstance(variable, str):
        raise ConfigError(f"{where}: {key} must be the name of an environment variable, a string")
    if variable and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
        shown = variable if len(variable) <= 12 else f"{variable[:12]}..."  # a secret written there: not all of it
        raise ConfigError(
            f"{where}: {key} = {shown!r} is not the name of an environment variable",
            next_step=f"set {key} to the name of the variable that holds the value ({key} = "
            f'"{default or "DEPLOYKIT_CHAT_WEBHOOK"}"), and keep the value itself out of deploy.toml: a committed file',
        )
    return variable


def join_url(base: str, path: str) -> str:
    """``base`` and ``path`` joined by exactly one slash, whether or not ``base`` ends with one."""
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SENSITIVE_KEY.search(str(k)) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def body_start(response: HttpResponse, limit: int = EXCERPT) -> str:
    """The start of ``response``'s body on one line, tokens and secrets redacted; ``(empty body)`` if none."""
    try:
        data = json.loads(response.body) if response.body else None
    except ValueError:
        data = None
    text = json.dumps(_redact(data), separators=(",", ":")) if isinstance(data, dict | list) else response.text
    text = without_queries(_JWT.sub("<jwt>", " ".join(text.split())))
    if not text:
        return "(empty body)"
    return text if len(text) <= limit else text[:limit] + "…"


def unexpected(label: str, response: HttpResponse, expect: int | Collection[int], why: str = "") -> str:
    """``GET http://…/health → 502 (expected 200): <body start>`` (``why`` replaces the body start)."""
    wanted = " or ".join(str(s) for s in sorted({expect} if isinstance(expect, int) else expect))
    return f"{label} → {response.status} (expected {wanted}): {why or body_start(response)}"


def call(
    http: Http,
    method: str,
    url: str,
    *,
    expect: int | Collection[int] | None = 200,
    what: str | None = None,
    json_body: Any = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[HttpResponse, float]:
    """One HTTP request: its response and milliseconds taken; :class:`Failed` saying what was expected and what
    came back when the status is not ``expect``, or with the HttpError's message when nothing answered.

    ``expect=None`` takes any status. ``what`` names the request in the detail (default ``"METHOD url"``).
    """
    wanted = None if expect is None else {expect} if isinstance(expect, int) else set(expect)
    label = what or f"{method} {shown_url(url)}"
    started = time.perf_counter()
    try:
        response = http.request(method, url, json_body=json_body, data=data, headers=headers, timeout=timeout)
    except HttpError as exc:
        raise Failed(without_queries(str(exc).replace(url, shown_url(url)))) from None
    ms = (time.perf_counter() - started) * 1000
    if wanted is not None and response.status not in wanted:
        raise Failed(unexpected(label, response, wanted))
    return response, ms


def json_object(response: HttpResponse, label: str) -> dict[str, Any]:
    """The body of ``response`` as a JSON object, or :class:`Failed` quoting what came instead."""
    try:
        data = json.loads(response.body) if response.body else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Failed(f"{label} → {response.status} but the answer is not a JSON object: {body_start(response)}")
    return data


def ms(value: float) -> str:
    return f"{value:.0f} ms"


def require(endpoints: Endpoints, *names: str) -> None:
    """:class:`Skipped` naming the endpoints (``alb_url``, ``tables.kyc``...) the environment lacks."""
    missing = []
    for name in names:
        attribute, _, key = name.partition(".")
        value = getattr(endpoints, attribute, None)
        if key:
            value = value.get(key) if isinstance(value, dict) else None
        if not value:
            missing.append(name)
    if missing:
        raise Skipped(f"the endpoints of {endpoints.env!r} have no {', '.join(missing)}")


# -- tokens ---------------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified ({} when it is not one): only to read ``sub``."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def tamper(token: str) -> str:
    """The same JWT with the first characters of its signature changed (header and claims untouched).

    The start of the signature is changed, not its end: the last base64url character carries padding bits,
    so changing it may leave the signature's bytes as they were.
    """
    head, _, signature = token.rpartition(".")
    if not signature:
        return token + "AAAAAAAA"
    changed = "".join("B" if c == "A" else "A" for c in signature[:8]) + signature[8:]
    return f"{head}.{changed}"


# -- throwaway users ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeUser:
    """A Cognito user made for one check run. ``username`` is Cognito's (a UUID in a pool that signs in by
    email); people log in with ``email``."""

    email: str
    username: str
    sub: str
    password: str = field(repr=False)


def new_password(length: int = 24) -> str:
    """A random password with upper and lower case letters, digits and symbols (Cognito's strict policy)."""
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS)
    chars = [secrets.choice(c) for c in classes]
    everything = "".join(classes)
    chars += [secrets.choice(everything) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def create_user(idp: Any, pool_id: str, cleanup: Cleanup, *, together: bool = False) -> SmokeUser:
    """A confirmed user with a random permanent password in ``pool_id``; its deletion is registered with
    ``cleanup`` as soon as it exists (``together``: as :meth:`Cleanup.add` says, when nothing the check undoes
    needs the user)."""
    email = f"{SMOKE_USER_PREFIX}{secrets.token_hex(8)}@example.com"
    try:
        answer = idp.admin_create_user(UserPoolId=pool_id, Username=email, MessageAction="SUPPRESS")
    except Exception as exc:
        raise Failed(f"cannot create a throwaway user in the user pool {pool_id}: {exc}") from None
    record = answer.get("User") or {}
    username = str(record.get("Username") or email)
    cleanup.add(
        f"delete the throwaway user {email} from {pool_id}",
        lambda: idp.admin_delete_user(UserPoolId=pool_id, Username=username),
        together=together,
    )
    attributes = {a.get("Name"): a.get("Value") for a in record.get("Attributes") or []}
    password = new_password()
    try:
        if not attributes.get("sub"):
            found = idp.admin_get_user(UserPoolId=pool_id, Username=username)
            attributes = {a.get("Name"): a.get("Value") for a in found.get("UserAttributes") or []}
        idp.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=password, Permanent=True)
    except Exception as exc:
        raise Failed(f"cannot set up the throwaway user {email} in {pool_id}: {exc}") from None
    return SmokeUser(email=email, username=username, sub=str(attributes.get("sub") or ""), password=password)


def login(http: Http, login_url: str, user: SmokeUser) -> tuple[str, float]:
    """Log ``user`` in through the API's login route: (access token, milliseconds), or :class:`Failed`."""
    label = f"POST {shown_url(login_url)} (login as {user.email})"
    response, took = call(
        http, "POST", login_url, what=label, json_body={"username": user.email, "password": user.password}
    )
    token = json_object(response, label).get("access_token")
    if not isinstance(token, str) or token.count(".") != 2:
        raise Failed(f"{label} → 200 but the answer has no access_token (a JWT): {body_start(response)}")
    return token, took


# -- running a check ------------------------------------------------------------------------------------


class Cleanup:
    """What a check created, undone in reverse order; every step runs even when an earlier one fails. Steps added
    ``together`` that follow one another run at the same time: one round trip for all of them (on AWS 50-200 ms
    each), where one after the other each waited for the one before."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object], bool]] = []

    def add(self, what: str, action: Callable[[], object], *, together: bool = False) -> None:
        """Register ``action`` (``what`` says it in a detail, e.g. "delete s3://bucket/key"). ``together``: it
        depends on none of the steps next to it that are added together too (deleting a user, and the records
        the check made for it), so they may be undone at the same time."""
        self._steps.append((what, action, together))

    def run(self) -> list[str]:
        """Run every step, last registered first (steps added together, at once); the problems, one line each, in
        that order."""
        problems: list[str] = []
        while self._steps:
            batch = [self._steps.pop()]
            while batch[-1][2] and self._steps and self._steps[-1][2]:
                batch.append(self._steps.pop())
            if len(batch) == 1:
                problems += filter(None, [_undo(batch[0][0], batch[0][1])])
                continue
            with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="cleanup") as pool:
                undone = list(pool.map(lambda step: _undo(step[0], step[1]), batch))
            problems += filter(None, undone)
        return problems


def _undo(what: str, action: Callable[[], object]) -> str | None:
    """Run ``action``; what went wrong, as one line, or None."""
    try:
        action()
    except Exception as exc:
        return f"could not {what} ({type(exc).__name__}: {exc})"
    return None


def run_check_body(name: str, ctx: CheckContext, body: Callable[[CheckContext, Cleanup], str]) -> CheckResult:
    """Run ``body`` and always its cleanup: passed with the detail it returns, failed or skipped with the
    message of :class:`Failed` / :class:`Skipped`, failed with any other error; a failed cleanup is a failure."""
    cleanup = Cleanup()
    try:
        try:
            result = CheckResult.passed(name, body(ctx, cleanup))
        except Skipped as exc:
            result = CheckResult.skipped(name, str(exc))
        except (Failed, HttpError) as exc:
            result = CheckResult.failed(name, str(exc))
        except Exception as exc:  # an unexpected error (an AWS call...) is a failure with its reason
            result = CheckResult.failed(name, f"{type(exc).__name__}: {exc}")
    finally:
        problems = cleanup.run()
    if problems:
        left = "; ".join(problems)
        detail = f"{result.detail}; cleanup failed: {left}" if result.detail else f"cleanup failed: {left}"
        return CheckResult.failed(name, detail)
    return result
