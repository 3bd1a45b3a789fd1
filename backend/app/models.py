"""Request and response bodies (pydantic): what comes in is validated, what goes out is documented."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_RENTAL_DAYS = 30
MAX_DAYS_AHEAD = 365
ALLOWED_KYC_TYPES = ("image/jpeg", "image/png", "application/pdf")

KycContentType = Literal["image/jpeg", "image/png", "application/pdf"]
DocumentType = Literal["passport", "driving_licence", "national_id"]
KycStatus = Literal["PENDING_UPLOAD", "SUBMITTED", "REJECTED"]


def today_utc() -> date:
    return datetime.now(UTC).date()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Me(BaseModel):
    sub: str
    username: str
    email: str | None = None
    token_use: str
    groups: list[str] = []


class Car(BaseModel):
    car_id: str
    make: str
    model: str
    category: str
    seats: int
    transmission: str
    daily_price_cents: int
    currency: str


class CarList(BaseModel):
    cars: list[Car]


class BookingRequest(_Strict):
    car_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    start_date: date
    end_date: date

    @model_validator(mode="after")
    def _sensible_dates(self) -> BookingRequest:
        today = today_utc()
        if self.start_date < today:
            raise ValueError("start_date must not be in the past")
        if self.start_date > today + timedelta(days=MAX_DAYS_AHEAD):
            raise ValueError(f"start_date must be within {MAX_DAYS_AHEAD} days")
        if self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        if (self.end_date - self.start_date).days > MAX_RENTAL_DAYS:
            raise ValueError(f"a rental lasts at most {MAX_RENTAL_DAYS} days")
        return self


class Booking(BaseModel):
    booking_id: str
    car_id: str
    start_date: date
    end_date: date
    days: int
    total_price_cents: int
    currency: str
    status: Literal["CONFIRMED", "CANCELLED"]
    created_at: str
    cancelled_at: str | None = None


class BookingList(BaseModel):
    bookings: list[Booking]


class KycStartRequest(_Strict):
    document_type: DocumentType
    content_type: KycContentType


class KycCase(BaseModel):
    case_id: str
    status: KycStatus
    document_type: DocumentType
    content_type: KycContentType
    created_at: str
    updated_at: str
    submitted_at: str | None = None
    size_bytes: int | None = None
    rejection_reason: str | None = None


class KycUpload(BaseModel):
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    expires_in: int
    max_bytes: int


class KycStartResponse(BaseModel):
    case: KycCase
    upload: KycUpload


class KycCaseList(BaseModel):
    cases: list[KycCase]


class Check(BaseModel):
    status: Literal["ok", "fail"]
    target: str
    latency_ms: float
    error: str | None = None


class DeepHealth(BaseModel):
    status: Literal["ok", "fail"]
    checks: dict[str, Check]
