"""What the routes need, built once per process by create_app and kept on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import Principal, TokenVerifier
from app.aws import AwsClients
from app.config import Settings
from app.errors import ApiError
from app.kyc import KycService
from app.store import Store


@dataclass(frozen=True)
class Services:
    settings: Settings
    clients: AwsClients
    store: Store
    kyc: KycService
    verifier: TokenVerifier


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


_bearer = HTTPBearer(auto_error=False)


def current_user(
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller; 401 without a valid ``Authorization: Bearer <token>``."""
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    return services.verifier.verify(credentials.credentials)


ServicesDep = Annotated[Services, Depends(get_services)]
UserDep = Annotated[Principal, Depends(current_user)]
