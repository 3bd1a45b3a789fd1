"""An environment's endpoints (URLs, ids, names), resolved from its stacks' outputs.

Every task and check that needs "where is the ALB", "which user pool", "which table" asks
:func:`resolve_endpoints`, which reads the outputs of the five stacks (names from ``env.stacks``; output keys
as listed in cdk/README.md) and then applies the environment's overrides (deploy.toml). An override is a
template formatted with the outputs of all stacks (plus ``{env}``, ``{region}`` and every endpoint already
read from the outputs, e.g. ``{api_url}``), which is how the sandbox maps AWS-shaped URLs to its local ones::

    api_url = "http://127.0.0.1:4567/restapis/{ApiId}/{ApiStageName}/_user_request_/"
    alb_url = "http://127.0.0.1:8080"

Override keys are the field names of :class:`Endpoints`; the mapped ones are written ``tables.cars``,
``buckets.kyc``, ``functions.login_handler``. When ``api_url`` is overridden, ``login_url`` and
``api_health_url`` follow it (same path below the API's base URL) unless they are overridden too.

The Lambda functions are not listed here: each function (one per folder of ``lambda/``) has the outputs
``<Id>FunctionName`` and ``<Id>AliasArn`` in the stack that holds it (the API stack, or one of the team's own),
``<Id>`` being its folder's name in CamelCase (``login_handler`` → ``LoginHandler``, :func:`function_id`), and every
pair found is one entry of ``functions`` and ``aliases`` (``hosts`` names its stack); a function added to a stack is
known as soon as the stack is deployed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import TYPE_CHECKING, Any

from deploykit.aws import at_once
from deploykit.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from deploykit.config import EnvConfig


# Endpoint field → (stack role, output key).
SCALAR_OUTPUTS: dict[str, tuple[str, str]] = {
    "alb_url": ("fargate", "AlbUrl"),
    "alb_dns_name": ("fargate", "AlbDnsName"),
    "load_balancer_arn": ("fargate", "LoadBalancerArn"),
    "target_group_arn": ("fargate", "TargetGroupArn"),
    "cluster": ("fargate", "ClusterName"),
    "service": ("fargate", "ServiceName"),
    "service_arn": ("fargate", "ServiceArn"),
    "container": ("fargate", "ContainerName"),
    "container_port": ("fargate", "ContainerPort"),
    "task_definition_family": ("fargate", "TaskDefinitionFamily"),
    "log_group": ("fargate", "BackendLogGroupName"),
    "api_url": ("api", "ApiUrl"),
    "api_id": ("api", "ApiId"),
    "api_stage": ("api", "ApiStageName"),
    "api_health_url": ("api", "ApiHealthUrl"),
    "login_url": ("api", "LoginUrl"),
    "user_pool_id": ("auth", "UserPoolId"),
    "user_pool_arn": ("auth", "UserPoolArn"),
    "user_pool_client_id": ("auth", "UserPoolClientId"),
    "user_pool_issuer": ("auth", "UserPoolIssuer"),
    "jwks_url": ("auth", "UserPoolJwksUrl"),
    "repository_uri": ("registry", "RepositoryUri"),
    "repository_name": ("registry", "RepositoryName"),
    "artifacts_bucket": ("registry", "ArtifactsBucketName"),
}
# Mapping field → its keys → (stack role, output key).
MAPPED_OUTPUTS: dict[str, dict[str, tuple[str, str]]] = {
    "tables": {
        "cars": ("data", "CarsTableName"),
        "bookings": ("data", "BookingsTableName"),
        "kyc": ("data", "KycTableName"),
    },
    "buckets": {
        "kyc": ("data", "KycBucketName"),
        "kyc_access_logs": ("data", "KycAccessLogsBucketName"),
        "artifacts": ("registry", "ArtifactsBucketName"),
    },
}
# Mapping field → the suffix of its stack's output for each function: <Id>FunctionName, <Id>AliasArn.
FUNCTION_OUTPUTS = {"functions": "FunctionName", "aliases": "AliasArn"}
FUNCTION_FOLDER = re.compile(r"[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*")  # the folder names function_id round-trips
# URLs below the API's base URL: they follow an overridden api_url.
FOLLOW_API_URL = ("login_url", "api_health_url")


@dataclass(frozen=True)
class Endpoints:
    """Where an environment's parts are. ``outputs`` holds every stack's raw outputs, by stack name."""

    env: str
    region: str
    alb_url: str
    alb_dns_name: str
    load_balancer_arn: str
    target_group_arn: str
    cluster: str
    service: str
    service_arn: str
    container: str
    container_port: str
    task_definition_family: str
    log_group: str
    api_url: str
    api_id: str
    api_stage: str
    api_health_url: str
    login_url: str
    user_pool_id: str
    user_pool_arn: str
    user_pool_client_id: str
    user_pool_issuer: str
    jwks_url: str
    repository_uri: str
    repository_name: str
    artifacts_bucket: str
    tables: dict[str, str] = field(default_factory=dict)  # cars, bookings, kyc
    buckets: dict[str, str] = field(default_factory=dict)  # kyc, kyc_access_logs, artifacts
    functions: dict[str, str] = field(default_factory=dict)  # folder of lambda/ (login_handler) → function name
    aliases: dict[str, str] = field(default_factory=dict)  # folder of lambda/ → its `live` alias ARN
    hosts: dict[str, str] = field(default_factory=dict)  # folder of lambda/ → the stack that holds its function
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # stack name → its outputs

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def override_keys() -> list[str]:
    """Every key an override may set, but for the functions' (``functions.<fn>``, ``aliases.<fn>``)."""
    return [*SCALAR_OUTPUTS, *(f"{name}.{key}" for name, keys in MAPPED_OUTPUTS.items() for key in keys)]


def function_id(function: str) -> str:
    """login_handler → LoginHandler: the name of a function's construct, its outputs and its code parameter."""
    return "".join(part.capitalize() for part in function.split("_"))


def function_outputs(outputs: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{"functions": {fn: function name}, "aliases": {fn: alias ARN}}`` from one stack's outputs."""
    found: dict[str, dict[str, str]] = {name: {} for name in FUNCTION_OUTPUTS}
    for key, value in outputs.items():
        for name, suffix in FUNCTION_OUTPUTS.items():
            ident = key.removesuffix(suffix)
            folder = folder_of(ident)
            if ident != key and folder is not None:
                found[name][folder] = value
    return found


def stacks_functions(by_stack: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``{"functions": ..., "aliases": ..., "hosts": {fn: stack name}}`` from the outputs of every stack deployed
    (stack name → its outputs, in the environment's order). A function two stacks name (moved from one to the other
    between their deploys) is the first's."""
    found: dict[str, dict[str, str]] = {name: {} for name in (*FUNCTION_OUTPUTS, "hosts")}
    for stack, outputs in by_stack.items():
        held = function_outputs(outputs)
        for fn in held["functions"]:
            if fn not in found["hosts"]:
                found["hosts"][fn] = stack
                for name in FUNCTION_OUTPUTS:
                    if fn in held[name]:
                        found[name][fn] = held[name][fn]
    return found


def code_parameter(function: str) -> str:
    """login_handler → LoginHandlerCodeKey: the parameter for that function's S3 key, in the stack that holds it."""
    return function_id(function) + "CodeKey"


def code_parameters(template: Mapping[str, Any]) -> dict[str, str]:
    """function → its code parameter, for each one a template's parameters declare (of the functions it holds)."""
    found: dict[str, str] = {}
    for name in template.get("Parameters") or {}:
        folder = folder_of(name.removesuffix("CodeKey")) if name.endswith("CodeKey") else None
        if folder is not None:
            found[folder] = name
    return found


def folder_of(ident: str) -> str | None:
    """LoginHandler → login_handler, the inverse of :func:`function_id`; None when ``ident`` names no folder."""
    folder = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", ident).lower()
    return folder if FUNCTION_FOLDER.fullmatch(folder) and function_id(folder) == ident else None


def _is_function_key(key: str) -> bool:
    name, _, folder = key.partition(".")
    return name in FUNCTION_OUTPUTS and FUNCTION_FOLDER.fullmatch(folder) is not None


def _sources() -> dict[str, tuple[str, str]]:
    """Every endpoint key (``alb_url``, ``tables.cars``...) → (stack role, output key)."""
    sources = dict(SCALAR_OUTPUTS)
    for name, keys in MAPPED_OUTPUTS.items():
        sources.update({f"{name}.{key}": source for key, source in keys.items()})
    return sources


def check_overrides(overrides: Mapping[str, str], env_name: str, table: str = "") -> None:
    """ConfigError unless each key of ``overrides`` (an environment's [endpoints]) is an endpoint and each value a
    template that can be filled ({OutputKey} fields, {{ and }} for braces); what each field names is only known once
    the stacks' outputs are read. Checked as deploy.toml is read, and again here. ``table``: the environment's table
    as deploy.toml names it (``environments."dev-*"``, a pattern's); default: ``environments.<env_name>``."""
    next_step = f"fix [{table or f'environments.{env_name}'}.endpoints] in deploy.toml"
    unknown = sorted(key for key in set(overrides) - set(_sources()) if not _is_function_key(key))
    if unknown:
        raise ConfigError(
            f"unknown endpoint override(s) for environment {env_name!r}: {', '.join(unknown)} "
            f"(known: {', '.join([*override_keys(), *(f'{name}.<fn>' for name in FUNCTION_OUTPUTS)])})",
            next_step=next_step,
        )
    for key, template in overrides.items():
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            fields, problem = [], str(exc)
        else:
            odd = [name for name in fields if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
            problem = f"{{{odd[0]}}} is not a field (an output's name)" if odd else ""
        if problem:
            raise ConfigError(
                f"endpoint override {key} = {template!r} of environment {env_name!r} is not a valid template "
                f"({problem}); write {{{{ and }}}} for literal braces",
                next_step=next_step,
            )


def resolve_endpoints(
    outputs: Callable[[str], Mapping[str, str] | None], env: EnvConfig, overrides: Mapping[str, str] | None = None
) -> Endpoints:
    """The endpoints of ``env`` from its stacks' outputs, ``overrides`` applied last (see the module doc).

    ``outputs(stack)`` reads a stack's outputs (None: not deployed); deploykit passes the command's
    :class:`~deploykit.stacks.StackOutputs`."""
    overrides = dict(overrides or {})
    known = _sources()
    check_overrides(overrides, env.name)
    stack_names = env.stacks.roles()  # the team's own stacks too: their outputs say they are deployed
    by_stack: dict[str, dict[str, str]] = {}
    absent: list[str] = []
    read = at_once({name: partial(outputs, name) for name in stack_names.values()})
    for name, found in read.items():
        if found is None:
            absent.append(name)
        else:
            by_stack[name] = dict(found)

    values: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for key, (role, output) in known.items():
        name = stack_names[role]
        if name in by_stack and output in by_stack[name]:
            values[key] = by_stack[name][output]
        elif key not in overrides and name in by_stack:
            missing.setdefault(name, []).append(output)

    needed_absent = [
        name
        for name in absent
        if any(stack_names[role] == name and k not in overrides for k, (role, _) in known.items())
    ]
    if needed_absent or missing:
        problems = []
        if needed_absent:
            problems.append(f"not deployed: {', '.join(needed_absent)}")
        for name, keys in missing.items():
            problems.append(f"{name} has no output {', '.join(keys)}")
        raise UsageError(
            f"cannot resolve the endpoints of environment {env.name!r}: {'; '.join(problems)}",
            next_step=f"deploy the stacks: inv deploy.full --env {env.name}",
        )

    context: dict[str, str] = {"env": env.name, "region": env.region}
    for stack_outputs in by_stack.values():
        context.update(stack_outputs)
    context.update({k: v for k, v in values.items() if "." not in k})
    api_base = values.get("api_url", "")
    for key, template in overrides.items():
        values[key] = _format(template, context, key, env.name)
    if "api_url" in overrides:
        for key in FOLLOW_API_URL:
            if key not in overrides and api_base and values.get(key, "").startswith(api_base):
                values[key] = values["api_url"] + values[key][len(api_base) :]

    kwargs: dict[str, Any] = {key: values[key] for key in SCALAR_OUTPUTS}
    for name, sources in MAPPED_OUTPUTS.items():
        kwargs[name] = {key: values[f"{name}.{key}"] for key in sources}
    held = stacks_functions({name: by_stack[name] for name in stack_names.values() if name in by_stack})
    kwargs["hosts"] = held.pop("hosts")
    for name, found in held.items():
        kwargs[name] = found | {key.partition(".")[2]: v for key, v in values.items() if key.startswith(f"{name}.")}
    return Endpoints(env=env.name, region=env.region, outputs=by_stack, **kwargs)


def _format(template: str, context: Mapping[str, str], key: str, env_name: str) -> str:
    where = f"endpoint override {key} = {template!r} of environment {env_name!r}"
    next_step = f"fix [environments.{env_name}.endpoints] in deploy.toml"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        unknown = [name for name in names if name not in context]
        if not unknown:
            return template.format_map(context)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"{where} is not a valid template ({exc}); write {{{{ and }}}} for literal braces", next_step=next_step
        ) from None
    raise ConfigError(
        f"{where} names {', '.join('{' + n + '}' for n in unknown)}, which no stack output provides "
        f"(available: {', '.join(sorted(context))})",
        next_step=next_step,
    )
