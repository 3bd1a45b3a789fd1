"""[sandbox] task_environment: what differs between the sandbox and AWS, given to task containers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from unittest.mock import Mock

import boto3
import docker
import pytest

from sandbox.ext.alb import AlbExtension
from sandbox.ext.ecs_runtime import EcsRuntime, RTask, _task_environment, resolve_secrets
from sandbox.server import Sandbox
from sandbox.settings import Settings, SettingsError, load_settings

REGION, ACCOUNT = "eu-west-1", "123456789012"

JWKS = {"COGNITO_JWKS_URL": "{endpoint_url}/{COGNITO_USER_POOL_ID}/.well-known/jwks.json"}


def test_a_template_is_formatted_with_the_tasks_own_variables_and_the_endpoint(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, aws_port=4999)
    extra = _task_environment(JWKS, {"COGNITO_USER_POOL_ID": "us-east-1_abc"}, settings)
    assert extra == {"COGNITO_JWKS_URL": "http://127.0.0.1:4999/us-east-1_abc/.well-known/jwks.json"}


def test_a_task_that_sets_the_variable_or_lacks_what_it_names_does_not_get_it(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    assert _task_environment(JWKS, {"COGNITO_JWKS_URL": "mine", "COGNITO_USER_POOL_ID": "p"}, settings) == {}
    assert _task_environment(JWKS, {"VERSION": "1"}, settings) == {}  # a task that is not the backend


def test_deploy_toml_declares_it_and_a_malformed_one_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "deploy.toml"
    toml.write_text('[sandbox.task_environment]\nA = "{region}"\n')
    assert load_settings(toml).task_environment == {"A": "{region}"}
    toml.write_text("[sandbox]\ntask_environment = { A = 1 }\n")
    with pytest.raises(SettingsError, match="task_environment must be a table"):
        load_settings(toml)
    repo = load_settings(Path(__file__).resolve().parents[2] / "deploy.toml")
    assert "COGNITO_JWKS_URL" in repo.task_environment


def test_a_containers_secrets_are_fetched_from_ssm_and_secrets_manager_or_fail_the_task_as_on_ecs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ECS's agent fetches a container's secrets before it starts it: an SSM parameter by name or ARN (decrypted),
    a Secrets Manager secret by ARN, one JSON key of it. One that cannot be fetched fails the task's start with
    ResourceInitializationError, naming it."""
    from moto import mock_aws
    from moto.backends import get_backend

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        ssm, sm = boto3.client("ssm", region_name=REGION), boto3.client("secretsmanager", region_name=REGION)
        ssm.put_parameter(Name="/car-rental/api-key", Value="k-123", Type="SecureString")
        ssm.put_parameter(Name="plain", Value="p", Type="String")
        arn = sm.create_secret(Name="db", SecretString=json.dumps({"password": "pw", "user": "u"}))["ARN"]
        ssm_backend, sm_backend = (get_backend(s)[ACCOUNT][REGION] for s in ("ssm", "secretsmanager"))

        def resolved(*secrets: tuple[str, str]) -> tuple[dict[str, str], str]:
            listed = [{"name": name, "valueFrom": value_from} for name, value_from in secrets]
            return resolve_secrets(listed, ssm_backend, sm_backend)

        parameter_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/car-rental/api-key"
        assert resolved(
            ("API_KEY", parameter_arn), ("PLAIN", "plain"), ("DB_PASSWORD", f"{arn}:password::"), ("DB", arn)
        ) == ({"API_KEY": "k-123", "PLAIN": "p", "DB_PASSWORD": "pw", "DB": '{"password": "pw", "user": "u"}'}, "")

        found, failed = resolved(("API_KEY", parameter_arn), ("MISSING", "/car-rental/missing"))
        assert found == {} and failed == (
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval "
            "failed: unable to retrieve secrets from ssm: invalid parameters: /car-rental/missing"
        )
        for value_from in (f"{arn}:no-such-key::", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:gone-AbCdEf"):
            found, failed = resolved(("DB", value_from))
            assert found == {} and failed.startswith(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval "
                f"failed: unable to retrieve secret from asm: failed to fetch secret {value_from} from secrets manager"
            ), failed


def test_a_task_container_gets_its_task_definitions_environment_not_the_proxies_of_dockers_config(
    tmp_path: Path,
) -> None:
    """docker-py gives a container the proxies of ~/.docker/config.json unless told not to: the backend's calls to the
    sandbox on this machine (its AWS, the JWKS) went to that proxy. A Fargate task gets its task definition's."""
    runtime = EcsRuntime(Settings(root=tmp_path), Mock(spec=AlbExtension))
    runtime.sandbox = Mock(spec=Sandbox)
    runtime.sandbox.docker = Mock(spec=docker.DockerClient)
    runtime.sandbox.lock = threading.Lock()
    task = RTask("arn:aws:ecs:eu-west-1:1:task/c/abc", "c", "backend", "td:1", "d1", 8000, "backend")
    runtime._start_container(task, {"image": "backend:abc", "environment": {"A": "1"}})
    run = runtime.sandbox.docker.containers.run
    assert run.call_args.kwargs["use_config_proxy"] is False
    assert run.call_args.kwargs["environment"] == {"A": "1"}
