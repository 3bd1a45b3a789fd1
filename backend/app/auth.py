"""Cognito token verification: RS256 signature against the JWKS, issuer, expiry, token_use, client id.

The JWKS is fetched over HTTP with a short timeout, cached (an hour), and fetched again once when a token
names a key id the cache does not hold (Cognito rotated its keys). When even the fresh JWKS lacks that key
id, unknown key ids cause no further fetch for a cool-down (10 s), so tokens with made-up key ids cannot
turn the API into a JWKS hammer. Tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from app.errors import ApiError

log = logging.getLogger("app.auth")

ALGORITHM = "RS256"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class JwksUnavailable(Exception):
    """The JWKS could not be fetched (and no earlier copy is at hand)."""


class JwksCache:
    """The signing keys of one JWKS URL, by key id."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        ttl: float = 3600.0,
        refresh_cooldown: float = 10.0,
        failure_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.ttl = ttl
        self.refresh_cooldown = refresh_cooldown
        self.failure_backoff = failure_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._blocked_until = 0.0
        self._failed_until = 0.0  # with no key cached: no fetch before then, after one failed
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key for ``kid``, fetching the JWKS when not cached yet, stale, or missing this kid."""
        with self._lock:
            now = self._clock()
            fetched = False
            if self._keys is None or now - self._fetched_at >= self.ttl:
                self._refresh(now)
                fetched = True
            assert self._keys is not None
            found = self._keys.get(kid)
            if found is None and not fetched and now >= self._blocked_until:
                self._refresh(now)  # an unknown key id: the keys may have rotated; look once more
                found = self._keys.get(kid)
            if found is None:
                # Still unknown: no more fetches for unknown key ids during the cool-down.
                self._blocked_until = now + self.refresh_cooldown
            return found

    def _refresh(self, now: float) -> None:
        if self._keys is None and now < self._failed_until:
            # the fetch failed moments ago: every request fetching it again, one after the other under the lock,
            # held each worker thread for its timeout, and /health waited behind them past the ALB's 4 s
            raise JwksUnavailable("cannot fetch the JWKS: it failed moments ago")
        try:
            keys = self._fetch()
        except Exception as exc:
            if self._keys is None:
                self._failed_until = self._clock() + self.failure_backoff
                raise JwksUnavailable(f"cannot fetch the JWKS: {type(exc).__name__}") from exc
            log.warning("JWKS refresh failed (%s); keeping the cached keys", type(exc).__name__)
            self._fetched_at = now  # do not retry on every request
            return
        self._keys = keys
        self._fetched_at = now

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError("the JWKS URL must be http(s)")
        self.fetches += 1
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:  # http(s) only, checked above
            document = json.loads(response.read(1_000_000))
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []):
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str):
                continue
            try:
                keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
            except jwt.PyJWKError:
                log.warning("skipping an unusable JWKS key (kid %s)", kid)
        log.info("fetched %d signing key(s) from the JWKS", len(keys))
        return keys


@dataclass(frozen=True)
class Principal:
    """The caller, as its verified token says."""

    sub: str
    username: str
    email: str | None
    token_use: str
    groups: tuple[str, ...] = ()


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers=_CHALLENGE)


class TokenVerifier:
    """Verifies Cognito access and id tokens issued by ``issuer`` to ``client_id``."""

    def __init__(self, jwks: JwksCache, issuer: str, client_id: str, leeway: float = 5.0) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.client_id = client_id
        self.leeway = leeway

    def verify(self, token: str) -> Principal:
        if not (self.issuer and self.client_id and self.jwks.url):
            raise ApiError(503, "not_configured", "authentication is not configured (COGNITO_* variables)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorized("invalid_token", "the token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise _unauthorized("invalid_token", f"the token must be signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("invalid_token", "the token names no key id")
        try:
            key = self.jwks.key(kid)
        except JwksUnavailable:
            log.error("JWKS unavailable at %s", self.jwks.url)
            raise ApiError(503, "auth_unavailable", "cannot verify tokens right now; try again later") from None
        if key is None:
            raise _unauthorized("invalid_token", "the token is signed with an unknown key")
        claims = self._decode(token, key)
        return self._principal(claims)

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "sub", "token_use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("invalid_token", "the token signature is invalid") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("invalid_token", "the token was issued by another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized("invalid_token", f"the token lacks the {exc.claim} claim") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("invalid_token", "the token is invalid") from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        token_use = claims.get("token_use")
        if token_use == "access":
            if claims.get("client_id") != self.client_id:
                raise _unauthorized("invalid_token", "the token was issued to another client")
            username = claims.get("username")
        elif token_use == "id":
            audience = claims.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if self.client_id not in audiences:
                raise _unauthorized("invalid_token", "the token was issued to another client")
            username = claims.get("cognito:username")
        else:
            raise _unauthorized("invalid_token", "token_use must be access or id")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _unauthorized("invalid_token", "the token has no subject")
        email = claims.get("email")
        groups = claims.get("cognito:groups") or []
        return Principal(
            sub=sub,
            username=username if isinstance(username, str) and username else sub,
            email=email if isinstance(email, str) else None,
            token_use=token_use,
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
        )
