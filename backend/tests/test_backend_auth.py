"""Auth: real Cognito tokens (moto-signed, verified through moto's JWKS over HTTP) accepted; forged,
expired, foreign and malformed ones rejected with 401 and a JSON error."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from app.auth import JwksCache, JwksUnavailable
from carrental_testkit import FAKE_CLIENT_ID, FakeIdp, User, World, new_key, sign
from fastapi.testclient import TestClient


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def assert_401(response: Any, code: str = "invalid_token", reason: str = "") -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert reason in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


# -- accepted -------------------------------------------------------------------------------------


def test_access_token_accepted(api: TestClient, alice: User) -> None:
    response = api.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sub": alice.sub,
        "username": alice.username,
        "email": None,  # access tokens carry no email
        "token_use": "access",
        "groups": [],
    }


def test_id_token_accepted_with_email(api: TestClient, alice: User) -> None:
    response = api.get("/me", headers=bearer(alice.id_token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["sub"], body["username"], body["email"], body["token_use"]) == (
        alice.sub,
        alice.username,
        alice.email,
        "id",
    )


# -- rejected -------------------------------------------------------------------------------------


def test_missing_header(api: TestClient) -> None:
    assert_401(api.get("/me"), "missing_token")


def test_other_scheme(api: TestClient, alice: User) -> None:
    assert_401(api.get("/me", headers={"Authorization": f"Basic {alice.access_token}"}), "missing_token")


def test_garbage_token(api: TestClient) -> None:
    assert_401(api.get("/me", headers=bearer("not-a-jwt")), reason="malformed")


def test_bad_signature(api: TestClient, alice: User) -> None:
    # The real token's claims, re-signed with a key of our own under moto's key id.
    forged = sign(new_key(), "dummy", claims_of(alice.access_token))
    assert_401(api.get("/me", headers=bearer(forged)), reason="signature")


def test_tampered_payload(api: TestClient, alice: User, bob: User) -> None:
    header, _, signature = alice.access_token.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims_of(bob.access_token)).encode()).rstrip(b"=").decode()
    assert_401(api.get("/me", headers=bearer(f"{header}.{payload}.{signature}")), reason="signature")


def test_wrong_client(api: TestClient, make_user: Callable[..., User], world: World) -> None:
    user = make_user(client_id=world.other_client_id)
    assert_401(api.get("/me", headers=bearer(user.access_token)), reason="another client")
    assert_401(api.get("/me", headers=bearer(user.id_token)), reason="another client")


def test_wrong_issuer(api: TestClient, make_user: Callable[..., User], world: World) -> None:
    # Signed by the same moto key, but issued by another user pool.
    user = make_user(pool_id=world.other_pool_id, client_id=world.other_pool_client_id)
    assert_401(api.get("/me", headers=bearer(user.access_token)), reason="another issuer")


def test_expired(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    now = int(time.time())
    assert fake_idp_api.get("/me", headers=bearer(idp.token())).status_code == 200  # the same, unexpired
    expired = idp.token(iat=now - 7200, exp=now - 600)
    assert_401(fake_idp_api.get("/me", headers=bearer(expired)), "token_expired")


@pytest.mark.parametrize("token_use", ["refresh", "", None])
def test_wrong_token_use(fake_idp_api: TestClient, idp: FakeIdp, token_use: str | None) -> None:
    assert_401(fake_idp_api.get("/me", headers=bearer(idp.token(token_use=token_use))), reason="token_use")


def test_id_token_audience_checked(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    good = idp.token(token_use="id", client_id=None, aud=FAKE_CLIENT_ID, **{"cognito:username": "ann"})
    assert fake_idp_api.get("/me", headers=bearer(good)).json()["username"] == "ann"
    bad = idp.token(token_use="id", client_id=None, aud="someone-else")
    assert_401(fake_idp_api.get("/me", headers=bearer(bad)), reason="another client")


def test_missing_expiry(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    assert_401(fake_idp_api.get("/me", headers=bearer(idp.token(exp=None))), reason="exp")


def test_symmetric_and_unsigned_algorithms_refused(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    import jwt

    claims = idp.claims()
    hs256 = jwt.encode(claims, "a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    for token in (hs256, unsigned):
        assert_401(fake_idp_api.get("/me", headers=bearer(token)), reason="RS256")


# -- the JWKS: fetched once, cached, refreshed on an unknown key id --------------------------------


def test_jwks_cached_then_refreshed_once_on_unknown_kid(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    before = idp.fetches
    for _ in range(3):
        assert fake_idp_api.get("/me", headers=bearer(idp.token())).status_code == 200
    assert idp.fetches == before + 1  # cached after the first fetch

    # Cognito rotates: a new key appears in the JWKS; the API learns it with one more fetch.
    idp.add_key("fake-key-2")
    assert fake_idp_api.get("/me", headers=bearer(idp.token("fake-key-2"))).status_code == 200
    assert idp.fetches == before + 2


def test_unpublished_key_rejected(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    idp.add_key("never-published", publish=False)
    assert_401(fake_idp_api.get("/me", headers=bearer(idp.token("never-published"))), reason="unknown key")


def test_unknown_kid_refetch_is_rate_limited(idp: FakeIdp) -> None:
    idp.published[:] = ["fake-key-1"]
    now = [1000.0]
    cache = JwksCache(idp.jwks_url, refresh_cooldown=10.0, clock=lambda: now[0])
    before = idp.fetches
    assert cache.key("fake-key-1") is not None
    assert idp.fetches == before + 1
    assert cache.key("made-up-1") is None
    assert idp.fetches == before + 2  # an unknown kid: one more look
    assert cache.key("made-up-2") is None
    assert cache.key("made-up-3") is None
    assert cache.key("fake-key-1") is not None  # known keys still served from the cache
    assert idp.fetches == before + 2  # within the cool-down: no fetch per made-up kid
    now[0] += 11
    assert cache.key("made-up-4") is None
    assert idp.fetches == before + 3


def test_jwks_unreachable_is_503(fake_idp_api: TestClient, idp: FakeIdp) -> None:
    idp.fail = True
    response = fake_idp_api.get("/me", headers=bearer(idp.token()))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"


def test_jwks_fetch_times_out_quickly() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        cache = JwksCache(f"http://127.0.0.1:{silent.getsockname()[1]}/jwks.json", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(JwksUnavailable):
            cache.key("any")
        assert time.monotonic() - started < 2


def test_a_failed_fetch_is_not_tried_again_by_every_request_for_a_while() -> None:
    """With no key cached (a new task while Cognito or its egress is down), each request fetched the JWKS again, one
    after the other under the lock, each waiting its timeout: the worker threads filled, and /health waited behind
    them past the ALB's 4 s. A fetch that failed is tried again after the back-off, not by each request."""
    import socket

    now = [100.0]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    cache = JwksCache(f"http://127.0.0.1:{port}/jwks.json", timeout=0.3, failure_backoff=5.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(JwksUnavailable):
            cache.key("any")
    assert cache.fetches == 1
    now[0] += 5.0
    with pytest.raises(JwksUnavailable):
        cache.key("any")
    assert cache.fetches == 2


def test_auth_not_configured_is_503(make_api: Callable[..., TestClient], alice: User) -> None:
    api = make_api(user_pool_id="", client_id="", jwks_url_override="")
    response = api.get("/me", headers=bearer(alice.access_token))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_configured"
