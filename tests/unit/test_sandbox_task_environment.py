"""[sandbox] task_environment: what differs between the sandbox and AWS, given to task containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.ext.ecs_runtime import _task_environment
from sandbox.settings import Settings, SettingsError, load_settings

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
