"""The fleet team's check: the ALB serves a fleet with at least one car, each with a price; and its rule on
infrastructure changes: a table's key never changes."""

from __future__ import annotations

from typing import Any

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.config import Config, EnvConfig
from deploykit.errors import ConfigError
from deploykit.hookspecs import hookimpl

NAME = "team_fleet"


class TeamChecks:
    """The plugin: its entry point names the class, which deploykit makes once per plugin manager; the settings
    live in that instance, never in a module global that every manager of the process would share."""

    def __init__(self) -> None:
        self.min_cars = 1  # [plugins.team_checks] min_cars, read once deploy.toml is loaded

    @hookimpl
    def deploykit_configure(self, config: Config) -> None:
        settings, where = config.plugin_settings("team_checks", {"min_cars"})  # a misspelt key is refused
        min_cars = settings.get("min_cars", 1)
        if not isinstance(min_cars, int) or isinstance(min_cars, bool) or min_cars < 1:
            raise ConfigError(f"{where}: min_cars must be a whole number of 1 or more, not {min_cars!r}")
        self.min_cars = min_cars

    def fleet(self, ctx: CheckContext) -> CheckResult:
        url = ctx.endpoints.alb_url.rstrip("/") + "/cars"
        answer = ctx.http.get(url, timeout=10)
        if answer.status != 200:
            return CheckResult.failed(NAME, f"GET {url} → {answer.status} (expected 200): {answer.text[:120]}")
        cars = answer.json().get("cars", [])
        if not cars:
            return CheckResult.failed(NAME, f"GET {url} → no cars: the fleet is empty")
        if len(cars) < self.min_cars:
            return CheckResult.failed(NAME, f"GET {url} → {len(cars)} cars, fewer than min_cars = {self.min_cars}")
        unpriced = [car.get("car_id", "?") for car in cars if not car.get("daily_price_cents")]
        if unpriced:
            return CheckResult.failed(NAME, f"cars without a daily rate: {', '.join(unpriced)}")
        return CheckResult.passed(NAME, f"{len(cars)} cars listed, all priced")

    @hookimpl
    def deploykit_register_checks(self, env: EnvConfig) -> list[Check]:
        return [Check(NAME, self.fleet, description="the fleet is listed and priced", timeout=15)]

    @hookimpl
    def deploykit_review_stack_changes(self, env: EnvConfig, stack: str, changes: list[dict[str, Any]]) -> list[str]:
        """A table's key never changes, not even with --allow-replace: the new table would start empty."""
        return [
            f"{change['logical_id']}: the table's key would change ({value['before']} → {value['after']})"
            for change in changes
            if change["type"] == "AWS::DynamoDB::Table"
            for value in change["details"]
            if value["property"].startswith("KeySchema")
        ]
