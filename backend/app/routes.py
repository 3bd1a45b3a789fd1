"""The API's routes."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from app.errors import ApiError
from app.health import deep_health
from app.kyc import now_iso
from app.models import (
    Booking,
    BookingList,
    BookingRequest,
    Car,
    CarList,
    DeepHealth,
    KycCase,
    KycCaseList,
    KycStartRequest,
    KycStartResponse,
    Me,
    today_utc,
)
from app.services import ServicesDep, UserDep
from app.store import booking_days

log = logging.getLogger("app.routes")

router = APIRouter()

CaseId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the case id returned by POST /kyc")]


# -- health and version -----------------------------------------------------------------------


@router.get("/health", tags=["health"])
def health() -> dict[str, str]:
    """Shallow health: the process answers; no dependency is called."""
    return {"status": "ok"}


@router.get("/health/deep", tags=["health"], response_model=DeepHealth, responses={503: {"model": DeepHealth}})
def health_deep(services: ServicesDep) -> JSONResponse:
    """S3 bucket, each DynamoDB table and the Cognito user pool, each with status and latency; 503 if one fails."""
    result = deep_health(services.settings, services.clients)
    return JSONResponse(status_code=200 if result.status == "ok" else 503, content=result.model_dump())


@router.get("/version", tags=["health"])
def version(services: ServicesDep) -> dict[str, str]:
    """The git SHA this image was built from."""
    return {"git_sha": services.settings.git_sha}


# -- identity ---------------------------------------------------------------------------------


@router.get("/me", tags=["identity"])
def me(user: UserDep) -> Me:
    """The caller, as the verified token says."""
    return Me(
        sub=user.sub, username=user.username, email=user.email, token_use=user.token_use, groups=list(user.groups)
    )


# -- cars and bookings ------------------------------------------------------------------------


@router.get("/cars", tags=["cars"])
def list_cars(services: ServicesDep) -> CarList:
    """The fleet (seeded into an empty cars table on first use)."""
    services.store.ensure_fleet()
    return CarList(cars=[Car.model_validate(car) for car in services.store.list_cars()])


@router.post("/bookings", tags=["bookings"], status_code=201)
def create_booking(body: BookingRequest, services: ServicesDep, user: UserDep) -> Booking:
    """Book a car for whole days, ``start_date`` (pick-up) to ``end_date`` (return)."""
    services.store.ensure_fleet()
    car = services.store.get_car(body.car_id)
    if car is None:
        raise ApiError(422, "unknown_car", f"no car {body.car_id!r} in the fleet")
    # one customer holds at most so many bookings not yet ended: without a bound, one account took a car off the
    # market for the whole bookable year, back-to-back 30-day bookings, 13 requests (not atomic: two requests at
    # once may both pass it by one)
    today = today_utc().isoformat()
    open_ = sum(
        1
        for b in services.store.list_bookings(user.sub)
        if str(b["end_date"]) >= today and b.get("status") != "CANCELLED"
    )
    if open_ >= services.settings.max_open_bookings:
        raise ApiError(
            409,
            "too_many_bookings",
            f"you have {open_} bookings not yet ended, the most one customer may hold: book again once one has ended, "
            "or cancel one (DELETE /bookings/{booking_id})",
        )
    days = (body.end_date - body.start_date).days
    booking = Booking(
        booking_id=uuid.uuid4().hex,
        car_id=body.car_id,
        start_date=body.start_date,
        end_date=body.end_date,
        days=days,
        total_price_cents=int(car["daily_price_cents"]) * days,
        currency=str(car["currency"]),
        status="CONFIRMED",
        created_at=now_iso(),
    )
    held = booking_days(body.start_date.isoformat(), days)
    if not services.store.put_booking(user.sub, booking.model_dump(mode="json"), held):
        raise ApiError(409, "car_unavailable", f"{body.car_id} is booked for some of those days: choose other dates")
    log.info("booking %s: car %s for %d day(s)", booking.booking_id, booking.car_id, days)
    return booking


BookingId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the booking id returned by POST /bookings")]


@router.delete("/bookings/{booking_id}", tags=["bookings"])
def cancel_booking(booking_id: BookingId, services: ServicesDep, user: UserDep) -> Booking:
    """Cancel one of the caller's bookings: CANCELLED, and the car free again for its days (404 for anyone else's)."""
    cancelled = services.store.cancel_booking(user.sub, booking_id, now_iso())
    if cancelled is None:
        raise ApiError(404, "not_found", f"no booking {booking_id} of yours")
    log.info("booking %s cancelled", booking_id)
    return Booking.model_validate({k: v for k, v in cancelled.items() if k != "user_id"})


@router.get("/bookings", tags=["bookings"])
def list_bookings(services: ServicesDep, user: UserDep) -> BookingList:
    """The caller's own bookings, oldest first."""
    items = sorted(services.store.list_bookings(user.sub), key=lambda b: (str(b["created_at"]), str(b["booking_id"])))
    return BookingList(bookings=[Booking.model_validate({k: v for k, v in b.items() if k != "user_id"}) for b in items])


# -- KYC --------------------------------------------------------------------------------------


@router.post("/kyc", tags=["kyc"], status_code=201)
def start_kyc(body: KycStartRequest, services: ServicesDep, user: UserDep) -> KycStartResponse:
    """Start a KYC case: answers a presigned S3 PUT URL (Content-Type bound) for the document."""
    return services.kyc.start(user.sub, body.document_type, body.content_type)


@router.get("/kyc", tags=["kyc"])
def list_kyc(services: ServicesDep, user: UserDep) -> KycCaseList:
    """The caller's own KYC cases."""
    return KycCaseList(cases=services.kyc.list_cases(user.sub))


@router.get("/kyc/{case_id}", tags=["kyc"])
def get_kyc(case_id: CaseId, services: ServicesDep, user: UserDep) -> KycCase:
    """One of the caller's KYC cases (404 for anyone else's)."""
    return services.kyc.get(user.sub, case_id)


@router.post("/kyc/{case_id}/submit", tags=["kyc"])
def submit_kyc(case_id: CaseId, services: ServicesDep, user: UserDep) -> KycCase:
    """Check the uploaded document and move the case to SUBMITTED, or REJECTED with a reason."""
    return services.kyc.submit(user.sub, case_id)
