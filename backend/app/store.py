"""DynamoDB access for cars, bookings and KYC cases.

Key schema (what the data stack must create):

- cars table: partition key ``car_id`` (S)
- bookings table: partition key ``user_id`` (S), sort key ``booking_id`` (S)
- kyc cases table: partition key ``user_id`` (S), sort key ``case_id`` (S)

Keying bookings and cases by the caller's ``sub`` makes "a user sees only their own" hold by
construction: every read names the caller's partition, so another user's item is simply not found.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from app.errors import ApiError
from app.fleet import SEED_CARS

log = logging.getLogger("app.store")

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


TRANSACTION_ATTEMPTS = 3  # a booking's transaction cancelled by another in flight (TransactionConflict) is tried again
CAR_DAYS = "car#"  # the bookings table's key of the items holding a car for a day: car#<car_id> / <date>


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in data.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in item.items():
        value = _deserializer.deserialize(raw)
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        out[key] = value
    return out


def booking_days(start: str, days: int) -> list[str]:
    """The ISO dates a booking of ``days`` days from ``start`` holds its car on (pick-up day to the last night)."""
    first = date.fromisoformat(start)
    return [(first + timedelta(days=n)).isoformat() for n in range(days)]


def _require(name: str, env: str) -> str:
    if not name:
        raise ApiError(503, "not_configured", f"{env} is not set")
    return name


class Store:
    def __init__(
        self,
        dynamodb: Any,
        *,
        cars_table: str,
        bookings_table: str,
        kyc_table: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = dynamodb
        self._sleep = sleep
        self._cars = cars_table
        self._bookings = bookings_table
        self._kyc = kyc_table
        self._seeded = False
        self._seed_lock = threading.Lock()

    # -- cars ---------------------------------------------------------------------------------

    def ensure_fleet(self) -> int:
        """Seed the fleet when the cars table is empty; checked once per process. The number of cars written."""
        if self._seeded:
            return 0
        table = _require(self._cars, "CARS_TABLE")
        written = 0
        with self._seed_lock:
            if self._seeded:
                return 0
            if not self._db.scan(TableName=table, Limit=1, ProjectionExpression="car_id").get("Items"):
                for car in SEED_CARS:
                    try:  # conditional: two tasks seeding at once do not overwrite each other
                        self._db.put_item(
                            TableName=table, Item=to_item(car), ConditionExpression="attribute_not_exists(car_id)"
                        )
                        written += 1
                    except ClientError as exc:
                        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                            raise
                log.info("seeded %d cars into the empty cars table", written)
            self._seeded = True
        return written

    def list_cars(self) -> list[dict[str, Any]]:
        table = _require(self._cars, "CARS_TABLE")
        cars = [from_item(item) for page in self._pages("scan", TableName=table) for item in page]
        return sorted(cars, key=lambda car: str(car["car_id"]))

    def get_car(self, car_id: str) -> dict[str, Any] | None:
        table = _require(self._cars, "CARS_TABLE")
        item = self._db.get_item(TableName=table, Key=to_item({"car_id": car_id}), ConsistentRead=True).get("Item")
        return from_item(item) if item else None

    # -- bookings -----------------------------------------------------------------------------

    def put_booking(self, user_id: str, booking: dict[str, Any], days: list[str]) -> bool:
        """The booking, and the car held for each of its ``days`` (ISO dates), in one transaction: one item per car
        and day in the same table (key ``car#<car_id>`` / the date: no user's own, no index's), each written only if
        it is not there. False, nothing written, when another booking holds one of the days (two requests at once
        included: the transaction takes one of them)."""
        table = _require(self._bookings, "BOOKINGS_TABLE")
        holds = [
            {
                "Put": {
                    "TableName": table,
                    "Item": to_item(
                        {"user_id": f"{CAR_DAYS}{booking['car_id']}", "booking_id": day, "by": booking["booking_id"]}
                    ),
                    "ConditionExpression": "attribute_not_exists(booking_id)",
                }
            }
            for day in days
        ]
        own = {
            "Put": {
                "TableName": table,
                "Item": to_item({"user_id": user_id, **booking}),
                "ConditionExpression": "attribute_not_exists(booking_id)",
            }
        }
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=[own, *holds])
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if "ConditionalCheckFailed" in reasons[1:]:
                    return False
                if "TransactionConflict" not in reasons:
                    raise
                # another transaction on one of these items was in flight (a booking of the same car at the same
                # moment): it may fail, so this one is tried again rather than answered as the car being taken
                if attempt + 1 < TRANSACTION_ATTEMPTS:
                    self._sleep(0.05 * 2**attempt * (1 + random.random()))
        raise ApiError(
            409, "booking_contested", "other bookings of this car are being made at this moment: try again shortly"
        )

    def cancel_booking(self, user_id: str, booking_id: str, cancelled_at: str) -> dict[str, Any] | None:
        """The caller's booking ``booking_id`` marked CANCELLED and its car's days let go, in one transaction; None
        when the caller has no such booking. A booking cancelled already is answered as it is."""
        table = _require(self._bookings, "BOOKINGS_TABLE")
        key = to_item({"user_id": user_id, "booking_id": booking_id})
        item = self._db.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            return None
        booking = from_item(item)
        if booking.get("status") == "CANCELLED":
            return booking
        held = booking_days(str(booking["start_date"]), int(booking["days"]))
        release = [
            {
                "Delete": {
                    "TableName": table,
                    "Key": to_item({"user_id": f"{CAR_DAYS}{booking['car_id']}", "booking_id": day}),
                    "ConditionExpression": "#by = :booking",  # only the days this booking holds
                    "ExpressionAttributeNames": {"#by": "by"},
                    "ExpressionAttributeValues": {":booking": {"S": booking_id}},
                }
            }
            for day in held
        ]
        mark = {
            "Update": {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "SET #status = :cancelled, cancelled_at = :at",
                "ConditionExpression": "#status = :confirmed",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":cancelled": {"S": "CANCELLED"},
                    ":confirmed": {"S": "CONFIRMED"},
                    ":at": {"S": cancelled_at},
                },
            }
        }
        try:
            self._db.transact_write_items(TransactItems=[mark, *release])
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if reasons[:1] == ["ConditionalCheckFailed"]:  # cancelled meanwhile by another request
                again = self._db.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
                return from_item(again) if again else None
            raise
        return {**booking, "status": "CANCELLED", "cancelled_at": cancelled_at}

    def list_bookings(self, user_id: str) -> list[dict[str, Any]]:
        table = _require(self._bookings, "BOOKINGS_TABLE")
        return [from_item(item) for page in self._query_user(table, user_id) for item in page]

    # -- KYC cases ----------------------------------------------------------------------------

    def put_case(self, user_id: str, case: dict[str, Any]) -> None:
        table = _require(self._kyc, "KYC_TABLE")
        self._db.put_item(
            TableName=table,
            Item=to_item({"user_id": user_id, **case}),
            ConditionExpression="attribute_not_exists(case_id)",
        )

    def get_case(self, user_id: str, case_id: str) -> dict[str, Any] | None:
        table = _require(self._kyc, "KYC_TABLE")
        key = to_item({"user_id": user_id, "case_id": case_id})
        item = self._db.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return from_item(item) if item else None

    def list_cases(self, user_id: str) -> list[dict[str, Any]]:
        table = _require(self._kyc, "KYC_TABLE")
        return [from_item(item) for page in self._query_user(table, user_id) for item in page]

    def update_case(self, user_id: str, case_id: str, expected_status: str, changes: dict[str, Any]) -> bool:
        """Apply ``changes`` if the case is still in ``expected_status``; False if it moved meanwhile."""
        table = _require(self._kyc, "KYC_TABLE")
        names = {f"#f{i}": field for i, field in enumerate(changes)}
        values = {f":v{i}": _serializer.serialize(value) for i, value in enumerate(changes.values())}
        values[":expected"] = _serializer.serialize(expected_status)
        names["#status"] = "status"
        try:
            self._db.update_item(
                TableName=table,
                Key=to_item({"user_id": user_id, "case_id": case_id}),
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))),
                ConditionExpression="#status = :expected",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- helpers ------------------------------------------------------------------------------

    def _query_user(self, table: str, user_id: str) -> list[list[dict[str, Any]]]:
        return self._pages(
            "query",
            TableName=table,
            KeyConditionExpression="user_id = :user",
            ExpressionAttributeValues={":user": {"S": user_id}},
            ConsistentRead=True,
        )

    def _pages(self, operation: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
        paginator = self._db.get_paginator(operation)
        return [page.get("Items", []) for page in paginator.paginate(**kwargs)]
