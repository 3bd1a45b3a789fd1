"""What one environment's stacks are made from: account, region and names.

deploykit synthesizes the app for one environment of `deploy.toml` and hands the values over as CDK context
(`CDK_CONTEXT_JSON`, the standard mechanism, read by `aws_cdk.App`). For a synthesis by hand the same keys
can come from environment variables named `CAR_RENTAL_<KEY>` (e.g. `CAR_RENTAL_REGION`); account and region
also fall back to `CDK_DEFAULT_ACCOUNT` / `CDK_DEFAULT_REGION`. Anything unset takes the sandbox's value.

Context keys (all optional):

    environment         name of the deploy.toml environment (tags only)      "sandbox"
    account             12-digit AWS account id                              "123456789012"
    region              AWS region                                           "us-east-1"
    cluster             ECS cluster name                                     "car-rental-cluster"
    service             ECS service name                                     "car-rental-service"
    container           name of the backend container in the task definition "backend"
    repository          ECR repository name                                  "car-rental-backend"
    registry            registry host used instead of ECR's (deploy.toml)    "" (ECR)
    desired_count       running backend tasks                                1
    task_cpu            each backend task's CPU units (1024 = 1 vCPU)        256
    task_memory         each backend task's memory in MiB (a combination     512
                        Fargate takes with task_cpu: FARGATE_SIZES)
    availability_zones  list (or comma-separated string) of two or more AZs  ["<region>a", "<region>b"]
    kyc_cors_origins    list (or comma-separated string) of browser origins  ["*"]
    stacks              object: registry, data, auth, fargate, api -> stack name (deploy.toml [stacks])
    lambda_architecture what the Lambda functions run on: x86_64 or arm64     "x86_64"
                        (deploy.toml [build] lambda_architecture)
    lambda_runtime      the Lambda functions' runtime: python3.10 to 3.14    "python3.11"
                        (deploy.toml [build] lambda_runtime)
    cpu_architecture    what the backend's Fargate tasks run on: X86_64 or   "X86_64"
                        ARM64 (deploy.toml [build] platform)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

ENV_PREFIX = "CAR_RENTAL_"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# ECS cluster/service, ECR repository and container names: the strictest of their grammars.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,254}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
LAMBDA_ARCHITECTURES = ("x86_64", "arm64")  # as Lambda names them
# Lambda's Python runtimes: a copy of deploykit.packaging.LAMBDA_RUNTIMES, which checks deploy.toml's lambda_runtime
# as it is read (the CDK app cannot import deploykit; cdk/tests/test_cdk_settings.py keeps the two equal)
LAMBDA_RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14")
CPU_ARCHITECTURES = ("X86_64", "ARM64")  # as an ECS task definition's runtimePlatform names them
# The sizes a Fargate task may have: CPU units → the memory (MiB) each takes, as AWS's task definition reference lists
# them. A copy of deploykit.config.FARGATE_SIZES, which checks deploy.toml's task_cpu and task_memory as it is read:
# the CDK app runs as a process of its own and cannot import deploykit, and a synthesis by hand (CAR_RENTAL_TASK_CPU)
# must be refused here too, not by CloudFormation minutes later. cdk/tests/test_cdk_settings.py keeps the two equal.
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


class SettingsError(ValueError):
    """A context value or environment variable that cannot describe an environment."""


@dataclass(frozen=True)
class StackNames:
    """CloudFormation stack names, as in deploy.toml's `[environments.<env>.stacks]`: one field per role (a stack
    added to the app gets one too, named as its module, stacks/<role>_stack.py)."""

    registry: str = "CarRentalRegistryStack"
    data: str = "CarRentalDataStack"
    auth: str = "CarRentalAuthStack"
    fargate: str = "CarRentalFargateStack"
    api: str = "CarRentalApiStack"


@dataclass(frozen=True)
class Settings:
    """Everything the stacks need to know about the environment they are synthesized for."""

    environment: str = "sandbox"
    account: str = "123456789012"
    region: str = "us-east-1"
    cluster: str = "car-rental-cluster"
    service: str = "car-rental-service"
    container: str = "backend"
    repository: str = "car-rental-backend"
    # deploy.toml's `registry`: images are pulled from <registry>/<repository> instead of the ECR repository's
    # URI (the sandbox's local registry), exactly the reference deploykit writes into task definitions.
    registry: str = ""
    desired_count: int = 1
    # each backend task's size on Fargate: CPU units (1024 = 1 vCPU) and memory in MiB, a pair FARGATE_SIZES takes
    task_cpu: int = 256
    task_memory: int = 512
    availability_zones: tuple[str, ...] = ()
    kyc_cors_origins: tuple[str, ...] = ("*",)
    stacks: StackNames = field(default_factory=StackNames)
    # deploy.toml's [build] lambda_architecture: deploykit vendors the functions' requirements for the same one
    lambda_architecture: str = "x86_64"
    # deploy.toml's [build] lambda_runtime: deploykit vendors the functions' requirements for its CPython
    lambda_runtime: str = "python3.11"
    # deploy.toml's [build] platform, as ECS names its CPU: deploykit builds the backend's image for the same one
    cpu_architecture: str = "X86_64"

    def __post_init__(self) -> None:
        if not self.availability_zones:
            # Explicit zones keep synthesis offline: without them an environment-specific stack needs an
            # AZ lookup (the CDK CLI's job) and would otherwise synthesize placeholder zones.
            object.__setattr__(self, "availability_zones", (f"{self.region}a", f"{self.region}b"))
        self._validate()

    def _validate(self) -> None:
        if not _ACCOUNT.match(self.account):
            raise SettingsError(f"account must be a 12-digit AWS account id, got {self.account!r}")
        if not _REGION.match(self.region):
            raise SettingsError(f"region must look like 'us-east-1', got {self.region!r}")
        for key in ("cluster", "service", "container", "repository"):
            value = getattr(self, key)
            if not _NAME.match(value):
                raise SettingsError(f"{key} must be lower-case letters, digits, '.', '_', '-' or '/', got {value!r}")
        if self.registry and not _REGISTRY.match(self.registry):
            raise SettingsError(f"registry must be a host[:port] without a scheme, got {self.registry!r}")
        if self.desired_count < 1:
            raise SettingsError(f"desired_count must be at least 1, got {self.desired_count}")
        if self.task_cpu not in FARGATE_SIZES:
            known = ", ".join(map(str, FARGATE_SIZES))
            raise SettingsError(f"task_cpu must be one of {known} (CPU units), got {self.task_cpu}")
        if self.task_memory not in FARGATE_SIZES[self.task_cpu]:
            memory = FARGATE_SIZES[self.task_cpu]
            raise SettingsError(
                f"task_memory {self.task_memory} does not go with task_cpu {self.task_cpu} on Fargate: it takes "
                f"{memory[0]} to {memory[-1]} MiB ({', '.join(map(str, memory))})"
            )
        if len(self.availability_zones) < 2:
            raise SettingsError("availability_zones needs at least two zones (an ALB spans two)")
        if any(not az.startswith(self.region) for az in self.availability_zones):
            raise SettingsError(f"availability_zones {list(self.availability_zones)} are not all in {self.region}")
        if not self.kyc_cors_origins:
            raise SettingsError("kyc_cors_origins needs at least one origin ('*' for any)")
        if self.lambda_architecture not in LAMBDA_ARCHITECTURES:
            known = ", ".join(LAMBDA_ARCHITECTURES)
            raise SettingsError(f"lambda_architecture must be one of {known}, got {self.lambda_architecture!r}")
        if self.lambda_runtime not in LAMBDA_RUNTIMES:
            known = ", ".join(LAMBDA_RUNTIMES)
            raise SettingsError(f"lambda_runtime must be one of {known}, got {self.lambda_runtime!r}")
        if self.cpu_architecture not in CPU_ARCHITECTURES:
            known = ", ".join(CPU_ARCHITECTURES)
            raise SettingsError(f"cpu_architecture must be one of {known}, got {self.cpu_architecture!r}")
        for key in ("registry", "data", "auth", "fargate", "api"):
            name = getattr(self.stacks, key)
            if not _STACK_NAME.match(name):
                raise SettingsError(f"stacks.{key} is not a valid CloudFormation stack name: {name!r}")

    @property
    def stack_names(self) -> tuple[str, ...]:
        """All five stack names, in deployment order."""
        s = self.stacks
        return (s.registry, s.data, s.auth, s.fargate, s.api)

    @classmethod
    def load(cls, context: Callable[[str], object], environ: Mapping[str, str]) -> Settings:
        """Settings from CDK context (`app.node.try_get_context`), then `CAR_RENTAL_*` variables, then defaults."""

        def raw(key: str) -> object:
            value = context(key)
            if value is None:
                value = environ.get(ENV_PREFIX + key.upper())
            if value is None and key in ("account", "region"):
                value = environ.get(f"CDK_DEFAULT_{key.upper()}")
            return value

        values: dict[str, object] = {}
        for f in fields(cls):
            value = raw(f.name)
            if value is None or value == "":
                continue
            if f.name in ("desired_count", "task_cpu", "task_memory"):
                values[f.name] = _as_int(f.name, value)
            elif f.name in ("availability_zones", "kyc_cors_origins"):
                values[f.name] = _as_str_tuple(f.name, value)
            elif f.name == "stacks":
                values[f.name] = _as_stack_names(value)
            elif isinstance(value, str):
                values[f.name] = value
            else:
                raise SettingsError(f"{f.name} must be a string, got {value!r}")
        return cls(**values)  # type: ignore[arg-type]


def _as_int(key: str, value: object) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"{key} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise SettingsError(f"{key} must be an integer, got {value!r}")


def _as_str_tuple(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise SettingsError(f"{key} must be a list of strings or a comma-separated string, got {value!r}")
    if not all(isinstance(item, str) and item for item in items):
        raise SettingsError(f"{key} must hold non-empty strings, got {value!r}")
    return tuple(str(item) for item in items)


def _as_stack_names(value: object) -> StackNames:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"stacks must be a JSON object, got {value!r}") from exc
    if not isinstance(value, dict):
        raise SettingsError(f"stacks must be an object of registry/data/auth/fargate/api names, got {value!r}")
    known = {f.name for f in fields(StackNames)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SettingsError(
            f"stacks has unknown keys {unknown}; known: {sorted(known)} (a stack added to the app: give StackNames in "
            "cdk/stacks/common/settings.py a field of its role, with its default name)"
        )
    if not all(isinstance(v, str) for v in value.values()):
        raise SettingsError(f"stacks values must be strings, got {value!r}")
    return StackNames(**value)
