"""The fleet team's check: the ALB serves a fleet with at least one car, each with a price; and its rule on
infrastructure changes: a table's key never changes."""

from __future__ import annotations

from typing import Any

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.config import Config, EnvConfig
from deploykit.errors import ConfigError
from deploykit.hookspecs import hookimpl

NAME = "team_fleet"
MIN_CARS = {"value": 1}  # [plugins.team_checks] min_cars, read once deploy.toml is loaded


@hookimpl
def deploykit_configure(config: Config) -> None:
    settings, where = config.plugin_settings("team_checks", {"min_cars"})  # a misspelt key is refused
    min_cars = settings.get("min_cars", 1)
    if not isinstance(min_cars, int) or isinstance(min_cars, bool) or min_cars < 1:
        raise ConfigError(f"{where}: min_cars must be a whole number of 1 or more, not {min_cars!r}")
    MIN_CARS["value"] = min_cars


def fleet(ctx: CheckContext) -> CheckResult:
    url = ctx.endpoints.alb_url.rstrip("/") + "/cars"
    answer = ctx.http.get(url, timeout=10)
    if answer.status != 200:
        return CheckResult.failed(NAME, f"GET {url} → {answer.status} (expected 200): {answer.text[:120]}")
    cars = answer.json().get("cars", [])
    if not cars:
        return CheckResult.failed(NAME, f"GET {url} → no cars: the fleet is empty")
    if len(cars) < MIN_CARS["value"]:
        return CheckResult.failed(NAME, f"GET {url} → {len(cars)} cars, fewer than min_cars = {MIN_CARS['value']}")
    unpriced = [car.get("car_id", "?") for car in cars if not car.get("daily_price_cents")]
    if unpriced:
        return CheckResult.failed(NAME, f"cars without a daily rate: {', '.join(unpriced)}")
    return CheckResult.passed(NAME, f"{len(cars)} cars listed, all priced")


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [Check(NAME, fleet, description="the fleet is listed and priced", timeout=15)]


@hookimpl
def deploykit_review_stack_changes(env: EnvConfig, stack: str, changes: list[dict[str, Any]]) -> list[str]:
    """A table's key never changes, not even with --allow-replace: the new table would start empty."""
    return [
        f"{change['logical_id']}: the table's key would change ({value['before']} → {value['after']})"
        for change in changes
        if change["type"] == "AWS::DynamoDB::Table"
        for value in change["details"]
        if value["property"].startswith("KeySchema")
    ]
