"""The release command, ``python -m app.release``: run once in each new image before it takes any traffic
(deploykit runs it so when deploy.toml's ``[release]`` names it; see the README, "The release command").

It checks that the new image reaches everything it needs (the same probes as ``/health/deep``: the KYC bucket, the
three tables, the user pool), and seeds the fleet into an empty cars table. Exit code 0: the rollout goes on;
1: a dependency is missing or a setting is wrong (each one printed), and the deploy stops with the old version still
serving. Safe to run again: seeding writes only into an empty table, each car only when it is not there.
"""

from __future__ import annotations

import sys

from app.aws import AwsClients, make_clients
from app.config import ConfigError, Settings
from app.health import deep_health
from app.store import Store


def main(settings: Settings | None = None, clients: AwsClients | None = None) -> int:
    """The release command for ``settings`` (default: from the environment, as the API reads them)."""
    try:
        settings = settings or Settings.from_env()
    except ConfigError as exc:
        print(f"release: the image's settings are wrong: {exc}")
        return 1
    clients = clients or make_clients(settings)
    health = deep_health(settings, clients)
    for name, check in sorted(health.checks.items()):
        problem = f": {check.error}" if check.error else ""
        print(f"release: {name} {check.status} ({check.target or 'not set'}, {check.latency_ms:g} ms){problem}")
    failed = sorted(name for name, check in health.checks.items() if check.status != "ok")
    if failed:
        print(f"release: failed: {', '.join(failed)} not reachable; nothing was changed")
        return 1
    store = Store(
        clients.dynamodb,
        cars_table=settings.cars_table,
        bookings_table=settings.bookings_table,
        kyc_table=settings.kyc_table,
    )
    seeded = store.ensure_fleet()
    print(f"release: ok: {seeded} car(s) seeded into {settings.cars_table}" if seeded else "release: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
