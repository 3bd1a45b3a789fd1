"""Cars (the seeded fleet) and bookings (validated, and only ever the caller's own)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest
from app.errors import ApiError
from app.fleet import SEED_CARS
from app.models import today_utc
from app.store import Store
from botocore.stub import Stubber
from carrental_testkit import User, World, create_table
from fastapi.testclient import TestClient


def day(offset: int) -> str:
    return (today_utc() + timedelta(days=offset)).isoformat()


def book(api: TestClient, user: User, car_id: str = "car-002", start: int = 10, end: int = 13) -> Any:
    return api.post(
        "/bookings", headers=user.headers, json={"car_id": car_id, "start_date": day(start), "end_date": day(end)}
    )


def test_cars_are_the_seeded_fleet(api: TestClient, world: World, aws_session: boto3.Session) -> None:
    first = api.get("/cars")
    assert first.status_code == 200, first.text
    cars = first.json()["cars"]
    assert [car["car_id"] for car in cars] == [car["car_id"] for car in SEED_CARS]
    assert cars[0] == SEED_CARS[0]
    assert api.get("/cars").json() == first.json()  # seeded once, not again
    dynamodb = aws_session.client("dynamodb", endpoint_url=world.endpoint)
    assert dynamodb.scan(TableName=world.cars_table, Select="COUNT")["Count"] == len(SEED_CARS)


def test_a_table_with_cars_is_not_seeded(
    make_api: Callable[..., TestClient], world: World, aws_session: boto3.Session
) -> None:
    dynamodb = aws_session.client("dynamodb", endpoint_url=world.endpoint)
    create_table(dynamodb, "cars-curated", "car_id")
    car = {
        "car_id": {"S": "car-900"},
        "make": {"S": "Fiat"},
        "model": {"S": "500"},
        "category": {"S": "mini"},
        "seats": {"N": "4"},
        "transmission": {"S": "manual"},
        "daily_price_cents": {"N": "2900"},
        "currency": {"S": "EUR"},
    }
    dynamodb.put_item(TableName="cars-curated", Item=car)
    cars = make_api(cars_table="cars-curated").get("/cars").json()["cars"]
    assert [c["car_id"] for c in cars] == ["car-900"]


def test_booking_created_and_listed(api: TestClient, alice: User) -> None:
    response = book(api, alice, "car-002", 10, 13)
    assert response.status_code == 201, response.text
    booking = response.json()
    assert booking["car_id"] == "car-002"
    assert (booking["start_date"], booking["end_date"], booking["days"]) == (day(10), day(13), 3)
    assert booking["total_price_cents"] == 3 * 4900
    assert booking["status"] == "CONFIRMED"
    listed = api.get("/bookings", headers=alice.headers)
    assert listed.status_code == 200
    assert listed.json()["bookings"] == [booking]


def test_bookings_are_the_callers_own(api: TestClient, alice: User, bob: User) -> None:
    alices = book(api, alice, "car-003", 20, 23).json()
    bobs = book(api, bob, "car-004", 1, 2).json()
    assert api.get("/bookings", headers=alice.headers).json()["bookings"] == [alices]
    assert api.get("/bookings", headers=bob.headers).json()["bookings"] == [bobs]


def test_a_car_is_booked_once_for_a_day(api: TestClient, alice: User, bob: User) -> None:
    """Three bookings of car-004 for the same days were each CONFIRMED; a day held is now refused (409), the car
    free again from the return day on (its pick-up day for the next one), another car or other days as before."""
    assert book(api, alice, "car-004", 210, 213).status_code == 201  # days no other test books (one table for all)
    for user, start, end in ((bob, 210, 213), (alice, 212, 215), (bob, 208, 211)):
        taken = book(api, user, "car-004", start, end)
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"]["code"] == "car_unavailable"
    assert book(api, bob, "car-004", 213, 214).status_code == 201  # picked up the day alice returns it
    assert book(api, bob, "car-004", 205, 210).status_code == 201  # returned the day alice picks it up
    assert book(api, bob, "car-006", 210, 213).status_code == 201
    assert len(api.get("/bookings", headers=bob.headers).json()["bookings"]) == 3
    assert len(api.get("/bookings", headers=alice.headers).json()["bookings"]) == 1


def test_bookings_need_a_token(api: TestClient) -> None:
    assert api.get("/bookings").status_code == 401
    response = api.post("/bookings", json={"car_id": "car-001", "start_date": day(1), "end_date": day(2)})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


def test_unknown_car(api: TestClient, alice: User) -> None:
    response = book(api, alice, "car-999")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_car"
    assert api.get("/bookings", headers=alice.headers).json()["bookings"] == []


def assert_invalid(response: Any, field: str, words: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert words in error["message"]
    assert any(detail["field"].startswith(field) for detail in error["details"])
    assert all(set(detail) == {"field", "message", "type"} for detail in error["details"])  # no echoed input


def test_dates_validated(api: TestClient, alice: User) -> None:
    assert_invalid(book(api, alice, start=5, end=5), "body", "end_date must be after start_date")
    assert_invalid(book(api, alice, start=5, end=3), "body", "end_date must be after start_date")
    assert_invalid(book(api, alice, start=-1, end=3), "body", "start_date must not be in the past")
    assert_invalid(book(api, alice, start=1, end=40), "body", "at most 30 days")
    assert_invalid(book(api, alice, start=400, end=401), "body", "within 365 days")
    bad_date = api.post(
        "/bookings", headers=alice.headers, json={"car_id": "car-001", "start_date": "31/12/2030", "end_date": day(2)}
    )
    assert_invalid(bad_date, "body.start_date", "date")
    assert api.get("/bookings", headers=alice.headers).json()["bookings"] == []


def test_body_validated(api: TestClient, alice: User) -> None:
    dates = {"start_date": day(1), "end_date": day(2)}
    assert_invalid(api.post("/bookings", headers=alice.headers, json=dates), "body.car_id", "required")
    assert_invalid(
        api.post("/bookings", headers=alice.headers, json={"car_id": "car-001", "price": 0, **dates}),
        "body.price",
        "not permitted",
    )
    assert_invalid(
        api.post("/bookings", headers=alice.headers, json={"car_id": "../etc", **dates}), "body.car_id", "pattern"
    )
    broken = api.post(
        "/bookings", headers={**alice.headers, "Content-Type": "application/json"}, content=b'{"car_id": '
    )
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "validation_error"


def test_one_customer_holds_a_bounded_number_of_open_bookings(
    make_api: Callable[..., TestClient], world: World, aws_session: boto3.Session, alice: User, bob: User
) -> None:
    """Back-to-back bookings of one car by one customer took it off the market for the bookable year (13 requests);
    past MAX_OPEN_BOOKINGS bookings not yet ended, a customer's next one is refused, others' are not."""
    api = make_api(max_open_bookings=2)
    assert book(api, alice, "car-005", 250, 280).status_code == 201
    assert book(api, alice, "car-005", 280, 310).status_code == 201
    refused = book(api, alice, "car-005", 310, 340)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == {
        "code": "too_many_bookings",
        "message": "you have 2 bookings not yet ended, the most one customer may hold: book again once one has ended, "
        "or cancel one (DELETE /bookings/{booking_id})",
    }
    assert book(api, bob, "car-005", 310, 340).status_code == 201
    # a booking that has ended counts no more (none can be made in the past: written as one would have been)
    dynamodb = aws_session.client("dynamodb", endpoint_url=world.endpoint)
    ended = {"user_id": {"S": bob.sub}, "booking_id": {"S": "old"}, "end_date": {"S": day(-1)}}
    dynamodb.put_item(TableName=world.bookings_table, Item=ended)
    assert book(api, bob, "car-005", 340, 341).status_code == 201


def conflicted(stub: Stubber, reason: str) -> None:
    """TransactWriteItems cancelled: the booking's own item fine, a day's hold cancelled for ``reason``."""
    stub.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled, please refer cancellation reasons for specific reasons",
        modeled_fields={"CancellationReasons": [{"Code": "None"}, {"Code": reason}]},
    )


def test_a_booking_cancelled_by_another_in_flight_is_tried_again_then_said_as_contested() -> None:
    """DynamoDB cancels a transaction that meets another in flight on one of its items (TransactionConflict: two
    customers booking one car at once; moto makes none): that one may fail, so the booking is tried again, not
    answered 503; a car still contested after three tries is a 409 saying to try again, a day taken a 409 as before."""
    client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    slept: list[float] = []
    store = Store(client, cars_table="c", bookings_table="b", kyc_table="k", sleep=slept.append)
    booking = {"booking_id": "b1", "car_id": "car-001"}
    with Stubber(client) as stub:
        conflicted(stub, "TransactionConflict")
        stub.add_response("transact_write_items", {})
        assert store.put_booking("alice", booking, [day(1)]) is True
        assert len(slept) == 1
        for _ in range(3):
            conflicted(stub, "TransactionConflict")
        with pytest.raises(ApiError) as contested:
            store.put_booking("alice", booking, [day(1)])
        assert (contested.value.status, contested.value.code) == (409, "booking_contested")
        assert len(slept) == 3  # between the three tries, none after the last
        conflicted(stub, "ConditionalCheckFailed")
        assert store.put_booking("alice", booking, [day(1)]) is False
        stub.assert_no_pending_responses()


def test_a_booking_is_cancelled_by_its_customer_and_the_car_is_free_again(
    make_api: Callable[..., TestClient], alice: User, bob: User
) -> None:
    """With a bound on the bookings one customer holds, a customer had no way to let one go: DELETE /bookings/{id}
    marks it CANCELLED and frees the car's days (its own days only); anyone else's is a 404."""
    api = make_api(max_open_bookings=1)
    mine = book(api, alice, "car-006", 300, 303).json()
    assert book(api, alice, "car-005", 300, 301).status_code == 409  # the bound
    assert book(api, bob, "car-006", 303, 305).status_code == 201  # bob's days right after alice's
    assert api.delete(f"/bookings/{mine['booking_id']}", headers=bob.headers).status_code == 404
    cancelled = api.delete(f"/bookings/{mine['booking_id']}", headers=alice.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED" and cancelled.json()["cancelled_at"]
    again = api.delete(f"/bookings/{mine['booking_id']}", headers=alice.headers)
    assert again.status_code == 200 and again.json() == cancelled.json()
    assert api.get("/bookings", headers=alice.headers).json()["bookings"] == [cancelled.json()]
    assert book(api, bob, "car-006", 300, 303).json()["error"]["code"] == "too_many_bookings"  # bob's own bound
    assert book(api, alice, "car-006", 300, 303).status_code == 201  # the car free again, alice's bound too
    unbound = make_api()  # the same tables
    assert book(unbound, alice, "car-006", 303, 304).json()["error"]["code"] == "car_unavailable"  # bob's still
    assert api.delete("/bookings/" + "0" * 32, headers=alice.headers).status_code == 404
    assert api.delete("/bookings/not-an-id", headers=alice.headers).status_code == 422
