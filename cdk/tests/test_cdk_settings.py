"""Settings: context first, then CAR_RENTAL_* variables, then the sandbox defaults. No synthesis here."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from stacks.common.settings import Settings, SettingsError, StackNames


def load(context: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    return Settings.load((context or {}).get, environ or {})


def test_defaults_are_the_sandbox_of_deploy_toml() -> None:
    settings = load()
    assert (settings.environment, settings.account, settings.region) == ("sandbox", "123456789012", "us-east-1")
    assert (settings.cluster, settings.service, settings.container, settings.repository) == (
        "car-rental-cluster",
        "car-rental-service",
        "backend",
        "car-rental-backend",
    )
    assert settings.registry == ""
    assert (settings.desired_count, settings.task_cpu, settings.task_memory) == (1, 256, 512)
    assert settings.availability_zones == ("us-east-1a", "us-east-1b")
    assert settings.stacks == StackNames()
    assert settings.stack_names == (
        "CarRentalRegistryStack",
        "CarRentalDataStack",
        "CarRentalAuthStack",
        "CarRentalFargateStack",
        "CarRentalApiStack",
    )


def test_context_wins_over_environment_variables() -> None:
    settings = load({"region": "eu-west-1"}, {"CAR_RENTAL_REGION": "eu-central-1", "CDK_DEFAULT_REGION": "us-west-2"})
    assert settings.region == "eu-west-1"
    assert settings.availability_zones == ("eu-west-1a", "eu-west-1b")


def test_environment_variables_then_cdk_defaults() -> None:
    assert load(environ={"CAR_RENTAL_REGION": "eu-central-1", "CDK_DEFAULT_REGION": "us-west-2"}).region == (
        "eu-central-1"
    )
    assert load(environ={"CDK_DEFAULT_ACCOUNT": "123456789012"}).account == "123456789012"
    assert load(environ={"CAR_RENTAL_DESIRED_COUNT": "3"}).desired_count == 3
    sized = load(environ={"CAR_RENTAL_TASK_CPU": "1024", "CAR_RENTAL_TASK_MEMORY": "2048"})
    assert (sized.task_cpu, sized.task_memory) == (1024, 2048)
    assert load({"task_cpu": 512, "task_memory": 4096}, {"CAR_RENTAL_TASK_CPU": "4096"}).task_cpu == 512
    assert load(environ={"CAR_RENTAL_KYC_CORS_ORIGINS": "https://a.example, https://b.example"}).kyc_cors_origins == (
        "https://a.example",
        "https://b.example",
    )


def test_stack_names_from_context_object_or_json() -> None:
    assert load({"stacks": {"api": "DevApi"}}).stacks == StackNames(api="DevApi")
    assert load(environ={"CAR_RENTAL_STACKS": '{"data": "DevData"}'}).stacks.data == "DevData"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"account": "12345"}, "12-digit"),
        ({"region": "Mars"}, "region must look like"),
        ({"cluster": "Bad Name"}, "cluster must be"),
        ({"desired_count": 0}, "at least 1"),
        ({"desired_count": True}, "must be an integer"),
        ({"desired_count": "two"}, "must be an integer"),
        ({"task_cpu": 300}, "task_cpu must be one of 256, 512, 1024, 2048, 4096, 8192, 16384"),
        ({"task_cpu": "one"}, "task_cpu must be an integer"),
        ({"task_cpu": 1024}, "task_memory 512 does not go with task_cpu 1024 on Fargate: it takes 2048 to 8192"),
        ({"task_cpu": 8192, "task_memory": 18432}, "does not go with task_cpu 8192"),
        ({"task_memory": 4096}, "task_memory 4096 does not go with task_cpu 256"),
        ({"availability_zones": ["us-east-1a"]}, "at least two zones"),
        ({"availability_zones": ["us-east-1a", "eu-west-1b"]}, "not all in us-east-1"),
        ({"registry": "http://127.0.0.1:5000"}, "without a scheme"),
        ({"stacks": {"nope": "X"}}, "unknown keys"),
        ({"stacks": {"api": "1bad"}}, "valid CloudFormation stack name"),
        ({"stacks": "not json"}, "JSON object"),
        ({"service": 7}, "must be a string"),
        ({"lambda_architecture": "aarch64"}, "lambda_architecture must be one of x86_64, arm64"),
        ({"lambda_runtime": "python3.9"}, "lambda_runtime must be one of python3.10, "),
        ({"cpu_architecture": "arm64"}, "cpu_architecture must be one of X86_64, ARM64"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(context: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(context)


def test_the_fargate_sizes_are_deploykit_s() -> None:
    """The CDK app's copy of the table deploykit checks deploy.toml with (it cannot import deploykit): the same sizes,
    so that what deploy.toml takes the app takes, and nothing else."""
    import ast
    from pathlib import Path

    from stacks.common.settings import FARGATE_SIZES

    source = (Path(__file__).resolve().parents[2] / "deploykit" / "config.py").read_text()
    (node,) = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == "FARGATE_SIZES"
    ]
    assert node.value is not None
    theirs = eval(compile(ast.Expression(node.value), "config.py", "eval"), {"tuple": tuple, "range": range})
    assert theirs == FARGATE_SIZES
    assert FARGATE_SIZES[256] == (512, 1024, 2048) and FARGATE_SIZES[16384][-1] == 122880
    for cpu, memory in FARGATE_SIZES.items():
        assert load({"task_cpu": cpu, "task_memory": memory[0]}).task_memory == memory[0]
        assert load({"task_cpu": str(cpu), "task_memory": str(memory[-1])}).task_memory == memory[-1]


def test_the_lambda_runtimes_are_deploykit_s() -> None:
    """The CDK app's copy of the runtimes deploykit checks deploy.toml's lambda_runtime with: the same ones."""
    import ast
    from pathlib import Path

    from stacks.common.settings import LAMBDA_RUNTIMES

    source = (Path(__file__).resolve().parents[2] / "deploykit" / "packaging.py").read_text()
    (node,) = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Assign) and [getattr(t, "id", "") for t in n.targets] == ["LAMBDA_RUNTIMES"]
    ]
    assert ast.literal_eval(node.value) == LAMBDA_RUNTIMES
    assert load({"lambda_runtime": "python3.13"}).lambda_runtime == "python3.13"
