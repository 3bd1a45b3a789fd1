"""The release command (python -m app.release): reaches every dependency, seeds an empty fleet, and says why not."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from app.aws import make_clients
from app.fleet import SEED_CARS
from app.release import main
from carrental_testkit import World, create_table


@pytest.fixture
def empty_cars(world: World, aws_session: boto3.Session) -> str:
    name = f"cars-{uuid.uuid4().hex[:8]}"
    create_table(aws_session.client("dynamodb", endpoint_url=world.endpoint), name, "car_id")
    return name


def run(world: World, aws_session: boto3.Session, capsys: Any, **overrides: Any) -> tuple[int, list[str]]:
    settings = world.settings(**overrides)
    code = main(settings, make_clients(settings, aws_session))
    return code, capsys.readouterr().out.splitlines()


def test_it_seeds_an_empty_fleet_once(world: World, aws_session: boto3.Session, empty_cars: str, capsys: Any) -> None:
    code, lines = run(world, aws_session, capsys, cars_table=empty_cars)
    assert code == 0
    assert lines[-1] == f"release: ok: {len(SEED_CARS)} car(s) seeded into {empty_cars}"
    assert f"release: dynamodb:cars ok ({empty_cars}," in "\n".join(lines)
    items = aws_session.client("dynamodb", endpoint_url=world.endpoint).scan(TableName=empty_cars)["Items"]
    assert len(items) == len(SEED_CARS)
    code, lines = run(world, aws_session, capsys, cars_table=empty_cars)  # run again: nothing to do
    assert code == 0 and lines[-1] == "release: ok"


def test_a_missing_dependency_fails_it_and_changes_nothing(
    world: World, aws_session: boto3.Session, empty_cars: str, capsys: Any
) -> None:
    code, lines = run(world, aws_session, capsys, cars_table=empty_cars, bookings_table="no-such-table")
    assert code == 1
    assert lines[-1] == "release: failed: dynamodb:bookings not reachable; nothing was changed"
    assert any(line.startswith("release: dynamodb:bookings fail (no-such-table") for line in lines)
    assert aws_session.client("dynamodb", endpoint_url=world.endpoint).scan(TableName=empty_cars)["Items"] == []


def test_wrong_settings_fail_it(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("KYC_MAX_BYTES", "-1")
    assert main() == 1
    assert capsys.readouterr().out.startswith("release: the image's settings are wrong:")
