"""How a team tests its own plugin: deploykit.testing's fixtures, no AWS and no network.

A team's repository enables them in its top-level conftest.py: ``pytest_plugins = ["deploykit.testing"]``
(here tests/conftest.py does it for the whole suite).
"""

from __future__ import annotations

import warnings

import pytest
import team_checks

from deploykit.checks import CheckContext
from deploykit.errors import ConfigError
from deploykit.testing import FakeHttp, plugin_checks, run_check, sample_env

CARS = "https://alb.example.test/cars"


def test_the_plugin_registers_its_check() -> None:
    assert [check.name for check in plugin_checks(team_checks.TeamChecks)] == ["team_fleet"]


def test_a_priced_fleet_passes(check_context: CheckContext, fake_http: FakeHttp) -> None:
    fake_http.add("GET", CARS, json_body={"cars": [{"car_id": "c1", "daily_price_cents": 4900}]})
    [check] = plugin_checks(team_checks.TeamChecks)
    result = run_check(check, check_context)
    assert (result.status, result.detail) == ("passed", "1 cars listed, all priced")


def test_an_empty_fleet_or_an_error_fails(check_context: CheckContext, fake_http: FakeHttp) -> None:
    [check] = plugin_checks(team_checks.TeamChecks)
    fake_http.add("GET", CARS, json_body={"cars": []})
    assert run_check(check, check_context).detail.endswith("the fleet is empty")
    fake_http.routes.clear()
    fake_http.add("GET", CARS, status=503, json_body={"error": {"code": "dependency_error"}})
    result = run_check(check, check_context)
    assert result.status == "failed" and "→ 503 (expected 200)" in result.detail


def test_the_fleet_may_be_held_to_a_minimum_by_the_plugins_settings(
    check_context: CheckContext, fake_http: FakeHttp
) -> None:
    fake_http.add("GET", CARS, json_body={"cars": [{"car_id": "c1", "daily_price_cents": 4900}]})
    [check] = plugin_checks(
        team_checks.TeamChecks, name="team_checks", settings={"min_cars": 2}
    )  # [plugins.team_checks]
    result = run_check(check, check_context)
    assert (result.status, result.detail) == ("failed", f"GET {CARS} → 1 cars, fewer than min_cars = 2")


@pytest.mark.parametrize(
    ("settings", "said"),
    [({"min_cars": 0}, "min_cars must be a whole number of 1 or more, not 0"), ({"min_car": 2}, "unknown keys")],
)
def test_settings_the_plugin_cannot_use_are_refused_as_inv_refuses_them(settings: dict[str, int], said: str) -> None:
    with pytest.raises(ConfigError, match=r"plugin 'team_checks': deploy.toml: \[plugins.team_checks\]") as err:
        plugin_checks(team_checks.TeamChecks, name="team_checks", settings=settings)
    assert said in err.value.message


def table_change(prop: str, before: str, after: str) -> dict[str, object]:
    return {
        "logical_id": "CarsTable",
        "type": "AWS::DynamoDB::Table",
        "action": "Modify",
        "replacement": "True",
        "access": False,
        "details": [{"property": prop, "before": before, "after": after}],
    }


def test_a_change_of_a_tables_key_is_refused_and_other_changes_are_not() -> None:
    key = table_change("KeySchema[0].AttributeName", "car_id", "car_uid")
    billing = table_change("BillingMode", "PROVISIONED", "PAY_PER_REQUEST")
    assert team_checks.TeamChecks().deploykit_review_stack_changes(sample_env(), "DataStack", [key, billing]) == [
        "CarsTable: the table's key would change (car_id → car_uid)"
    ]
    assert team_checks.TeamChecks().deploykit_review_stack_changes(sample_env(), "DataStack", [billing]) == []


def test_settings_without_the_plugins_name_are_refused_not_read_by_no_one() -> None:
    """Filed under "under-test", a table the plugin never reads: the test expecting min_cars = 2 passed on 1 car."""
    with pytest.raises(TypeError, match=r"plugin_checks\(\.\.\., settings=\.\.\.\) needs name=, the plugin's"):
        plugin_checks(team_checks.TeamChecks, settings={"min_cars": 2})


def test_a_class_plugin_is_made_as_the_loader_makes_it_and_a_misspelt_need_is_warned_of() -> None:
    """plugin_checks(TheClass) registered the class itself: "missing 1 required positional argument: 'env'". A need
    no plugin registers skips the check in inv smoke, which passes without it: warned of here, where the author is."""
    from deploykit.checks import Check, CheckResult
    from deploykit.hookspecs import hookimpl

    class Plugin:
        needs: tuple[str, ...] = ("alb_health",)

        @hookimpl
        def deploykit_register_checks(self, env: object) -> list[Check]:
            return [Check("fleet", lambda ctx: CheckResult.passed("fleet", "ok"), needs=self.needs)]

    with pytest.warns(UserWarning, match=r"check 'fleet' needs 'alb_health', .* \(did you mean 'alb'\?\)"):
        assert [c.name for c in plugin_checks(Plugin)] == ["fleet"]
    Plugin.needs = ("db",)
    with pytest.warns(UserWarning, match=r"check 'fleet' needs 'db', which no plugin installed here registers: "):
        plugin_checks(Plugin)
    Plugin.needs = ("alb", "api_gateway")  # checks the plugins installed here register
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugin_checks(Plugin)


def test_each_plugin_manager_makes_its_own_plugin_with_its_own_settings(
    check_context: CheckContext, fake_http: FakeHttp
) -> None:
    """The settings live in the instance a manager made: a module global was reset by the next manager's configure,
    and the first one's strict check passed on 1 car."""
    fake_http.add("GET", CARS, json_body={"cars": [{"car_id": "c1", "daily_price_cents": 4900}]})
    [strict] = plugin_checks(team_checks.TeamChecks, name="team_checks", settings={"min_cars": 2})
    plugin_checks(team_checks.TeamChecks, name="team_checks")  # another manager, the default min_cars
    assert run_check(strict, check_context).status == "failed"
