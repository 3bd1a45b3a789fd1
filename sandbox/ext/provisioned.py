"""Provisioned concurrency on Lambda aliases and versions, which moto lacks (its GetProvisionedConcurrencyConfig
answered 404 "Not yet implemented").

- ``provisioned_concurrency_api``: Put, Get, Delete and ListProvisionedConcurrencyConfigs, as AWS answers them: a
  configuration on an alias or a published version (``$LATEST`` is refused, as is an alias that routes a weighted
  share to another version: "Alias with weights can not be used with Provisioned Concurrency"); none is
  ``ProvisionedConcurrencyConfigNotFoundException`` (404).
- ``allocation_takes_time``: Lambda allocates the environments asynchronously: the configuration is ``IN_PROGRESS``
  for ``[sandbox] provisioned_concurrency_seconds`` (on AWS a minute or more), each environment's init is run (the
  sandbox's Lambda runtime starts a warm worker of the version), then it is ``READY``, all of it available; an init
  that fails makes it ``FAILED`` with ``FUNCTION_ERROR_INIT_FAILURE`` and the init's error as its reason.
- ``alias_moves_wait_for_it``: an alias with provisioned concurrency moved to another version keeps sending its
  requests to the version it served until the new one's allocation is READY: AWS adds a weight of 1 for the old
  version on the alias meanwhile (as terraform-provider-aws's PR #48116 reports it; not tried against AWS here), and
  takes it off once READY. A FAILED allocation leaves the old version serving. A version whose allocation failed
  never serves through the alias: the move away from it is at once.

Without :func:`install`'s timing (in-process moto, tests), an allocation is READY at once. The
configurations live on moto's Lambda backend, so a reset forgets them as it forgets the functions.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from moto.awslambda import urls as moto_lambda_urls
from moto.awslambda.exceptions import InvalidParameterValueException
from moto.awslambda.responses import LambdaResponse
from moto.core.exceptions import JsonRESTError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger("sandbox.lambda")

ALLOCATING, READY, FAILED = "IN_PROGRESS", "READY", "FAILED"
PATH = r"{0}/(?P<api_version>[^/]+)/functions/(?P<function_name>[\w_:%-]+)/provisioned-concurrency/?$"
WEIGHTED = "Alias with weights can not be used with Provisioned Concurrency"


class ProvisionedConfigNotFound(JsonRESTError):
    code = 404

    def __init__(self) -> None:
        super().__init__("ProvisionedConcurrencyConfigNotFoundException", "No Provisioned Concurrency Config found")


@dataclass
class Allocation:
    """The provisioned concurrency of one alias or version."""

    arn: str  # the alias's or version's ARN
    requested: int
    version: str  # the version whose environments it holds (an alias's: the one it points at)
    previous: str | None = None  # an alias moved: the version that serves its requests until READY
    status: str = ALLOCATING
    reason: str = ""
    modified: str = ""
    serial: int = 0  # a finish scheduled for an earlier allocation of the same qualifier does nothing

    def to_json(self) -> dict[str, Any]:
        ready = self.status == READY
        found: dict[str, Any] = {
            "RequestedProvisionedConcurrentExecutions": self.requested,
            "AvailableProvisionedConcurrentExecutions": self.requested if ready else 0,
            "AllocatedProvisionedConcurrentExecutions": self.requested if ready else 0,
            "Status": self.status,
            "LastModified": self.modified,
        }
        if self.reason:
            found["StatusReason"] = self.reason
        return found


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def allocations(backend: Any) -> dict[tuple[str, str], Allocation]:
    """(function name, qualifier) → its allocation, kept on moto's Lambda backend."""
    found: dict[tuple[str, str], Allocation] | None = getattr(backend, "sandbox_provisioned", None)
    if found is None:
        found = {}
        backend.sandbox_provisioned = found
    return found


@dataclass(frozen=True)
class Timing:
    """How the sandbox's allocations finish (kept on its Lambda backend): after ``seconds``, each version's init run
    by ``init`` ((backend, function, version) → its error, or None), the result applied under ``lock``."""

    seconds: Callable[[], float]
    init: Callable[[Any, str, str], str | None]
    lock: AbstractContextManager[Any]


def routes() -> None:
    """Add the API's route to moto's Lambda (once): allocations are READY at once until :func:`install`."""
    moto_lambda_urls.url_paths.setdefault(PATH, ProvisionedResponse.dispatch)


def install(backend: Any, timing: Timing) -> None:
    """The sandbox's: on ``backend``, allocations take time and run the init, and an alias's move waits for its
    allocation."""
    routes()
    backend.sandbox_provisioning = timing
    original = backend.update_alias

    def update_alias(
        name: str, function_name: str, function_version: str, description: str, routing_config: Any
    ) -> Any:  # moto's names: its responses pass them by keyword
        before = str(backend.get_alias(name, function_name).function_version)
        updated = original(name, function_name, function_version, description, routing_config)
        found = allocations(backend).get((function_name, name))
        weights = (updated.routing_config or {}).get("AdditionalVersionWeights") or {}
        if found is not None and str(updated.function_version) != before and not weights:
            was_serving = found.version == before and found.status != FAILED
            allocate(backend, function_name, name, found.requested, str(updated.function_version), before)
            if was_serving:  # the old version serves until the new one's environments are READY
                updated.routing_config = {"AdditionalVersionWeights": {before: 1.0}}
        return updated

    backend.update_alias = update_alias


_serials = itertools.count(1)


def allocate(
    backend: Any, function_name: str, qualifier: str, requested: int, version: str, previous: str | None
) -> Allocation:
    """A new allocation of ``qualifier`` (IN_PROGRESS), finished by the backend's :class:`Timing` (at once without
    one)."""
    arn = f"{backend.get_function(function_name).function_arn}:{qualifier}"
    found = Allocation(arn, requested, version, previous, modified=_stamp(), serial=next(_serials))
    allocations(backend)[(function_name, qualifier)] = found
    timing: Timing | None = getattr(backend, "sandbox_provisioning", None)
    if timing is None or timing.seconds() <= 0:
        _finish(backend, function_name, qualifier, found.serial, None)
    else:
        timer = threading.Timer(timing.seconds(), _ready, (backend, timing, function_name, qualifier, found.serial))
        timer.daemon = True
        timer.start()
    return found


def _ready(backend: Any, timing: Timing, function_name: str, qualifier: str, serial: int) -> None:
    """The timer's: run the version's init (without the sandbox's lock: it may call the sandbox), then finish."""
    found = allocations(backend).get((function_name, qualifier))
    if found is None or found.serial != serial:
        return
    try:
        error = timing.init(backend, function_name, found.version)
    except Exception as exc:  # the function or its version went meanwhile
        error = f"{type(exc).__name__}: {exc}"
    with timing.lock:
        _finish(backend, function_name, qualifier, serial, error)


def _finish(backend: Any, function_name: str, qualifier: str, serial: int, error: str | None) -> None:
    found = allocations(backend).get((function_name, qualifier))
    if found is None or found.serial != serial:  # deleted, or allocated again since
        return
    found.modified = _stamp()
    if error is not None:
        found.status, found.reason = FAILED, f"FUNCTION_ERROR_INIT_FAILURE: {error}"
        log.info(
            "provisioned concurrency of %s:%s failed on version %s: %s", function_name, qualifier, found.version, error
        )
        return
    found.status = READY
    if found.previous is None:
        return
    try:
        alias = backend.get_alias(qualifier, function_name)
    except Exception:  # deleted meanwhile
        return
    if str(alias.function_version) == found.version and alias.routing_config == {
        "AdditionalVersionWeights": {found.previous: 1.0}
    }:
        alias.routing_config = {}


class ProvisionedResponse(LambdaResponse):
    """The API's four operations; moto names the operation from the method and the URI (Get and List share it)."""

    def _target(self) -> tuple[str, str | None]:
        return unquote(self.path.rstrip("/").rsplit("/", 2)[-2]), self.querystring.get("Qualifier", [None])[0]

    def get_provisioned_concurrency_config(self) -> Any:
        name, qualifier = self._target()
        if "List" in self.querystring or qualifier is None:
            return self._list(name)
        self.backend.get_function(name)  # an unknown function: ResourceNotFoundException
        found = allocations(self.backend).get((name, qualifier))
        if found is None:
            raise ProvisionedConfigNotFound()
        return 200, {}, json.dumps(found.to_json())

    def list_provisioned_concurrency_configs(self) -> Any:
        name, qualifier = self._target()
        if qualifier is not None and "List" not in self.querystring:
            return self.get_provisioned_concurrency_config()
        return self._list(name)

    def _list(self, name: str) -> Any:
        self.backend.get_function(name)
        configs = [
            {"FunctionArn": found.arn, **found.to_json()}
            for (function, _), found in sorted(allocations(self.backend).items())
            if function == name
        ]
        return 200, {}, json.dumps({"ProvisionedConcurrencyConfigs": configs})

    def put_provisioned_concurrency_config(self) -> Any:
        name, qualifier = self._target()
        requested = self._get_param("ProvisionedConcurrentExecutions")
        if not qualifier or qualifier == "$LATEST":
            raise InvalidParameterValueException(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
            )
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise InvalidParameterValueException("ProvisionedConcurrentExecutions must be 1 or more")
        backend = self.backend
        if qualifier.isdigit():
            backend.get_function(name, qualifier)  # an unknown version: ResourceNotFoundException
            version = qualifier
        else:
            alias = backend.get_alias(qualifier, name)
            routing: Any = alias.routing_config or {}  # moto types it as a str: it is the call's dict
            if routing.get("AdditionalVersionWeights"):
                raise InvalidParameterValueException(WEIGHTED)
            version = str(alias.function_version)
        found = allocate(backend, name, qualifier, requested, version, None)
        return 202, {}, json.dumps(found.to_json())

    def delete_provisioned_concurrency_config(self) -> Any:
        name, qualifier = self._target()
        self.backend.get_function(name)
        allocations(self.backend).pop((name, qualifier or ""), None)
        return 204, {}, ""
