"""ECS and ELBv2 plumbing for the app chain: task-definition revisions, rolling, and waiting.

Nothing here makes a client: each function takes the boto3 clients it needs (made by
:class:`deploykit.aws.AwsFactory`), so functional tests hand in moto-backed or stubbed clients.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit.aws import AwsFactory, HandedOn, at_once, is_throttling
from deploykit.errors import NoCluster, ServiceBeingDeleted, UsageError

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

GIT_SHA_TAG = "deploykit:git-sha"
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's and ECR's rule for a tag
IMAGE_TAG_TAG = "deploykit:image-tag"

# Fields of DescribeTaskDefinition's answer that RegisterTaskDefinition accepts back.
REGISTER_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
    "enableFaultInjection",
    "trustedExecutionConfiguration",
)


# -- reading ------------------------------------------------------------------------------------


def check_image_tag(tag: str) -> str:
    """``--image-tag``, as given; UsageError unless it can name an image (checked before anything is read)."""
    if not _IMAGE_TAG.fullmatch(tag):
        raise UsageError(
            f"--image-tag {tag!r} cannot name an image: a tag is letters, digits, _, . and - (up to 128 characters, "
            "not starting with . or -)",
            next_step="pass a tag inv push gave an image, e.g. the 12 characters of its commit's SHA (inv history)",
        )
    return tag


def _create_command(env: EnvConfig | None) -> str:
    """The command that deploys the stack that creates the cluster and the service (``env``'s Fargate stack)."""
    return f"inv deploy.stack {env.stacks.fargate} --env {env.name}" if env else "inv deploy.stack <fargate stack>"


def no_cluster(cluster: str, env: EnvConfig | None) -> NoCluster:
    return NoCluster(
        f"ECS cluster {cluster!r} does not exist", next_step=f"deploy the Fargate stack first: {_create_command(env)}"
    )


def no_service(service: str, cluster: str, env: EnvConfig | None) -> UsageError:
    """The service is not in the cluster: deploy.toml names another, it was never made, or ECS no longer lists the one
    it deleted. The next step warns, as :func:`being_deleted`'s does, that one deleted by hand is not made again by
    deploying an unchanged template."""
    return UsageError(
        f"ECS service {service!r} not found in cluster {cluster!r}",
        next_step=f"check 'cluster' and 'service' in deploy.toml, or create it: {_create_command(env)} "
        f"({_not_made_again(env)})",
    )


def _not_made_again(env: EnvConfig | None) -> str:
    """Why deploying the Fargate stack may not make again a service deleted by hand, and how to see it: CloudFormation
    finds no change in an unchanged template, so it leaves the service it believes is there (a drift detection shows
    it gone). Said by :func:`being_deleted` and :func:`no_service` alike."""
    fargate = env.stacks.fargate if env else "<fargate stack>"
    return (
        f"deleted by hand while {fargate} still holds it, it is not made again from an unchanged template: "
        f"aws cloudformation detect-stack-drift --stack-name {fargate} shows it"
    )


GONE = "ECS lists a deleted service a while longer, but nothing runs on it or can be rolled out on it"


def target_groups(service: Mapping[str, Any]) -> list[str]:
    """The ARNs of the target groups a service (DescribeServices' entry) registers its tasks in."""
    return [str(lb["targetGroupArn"]) for lb in service.get("loadBalancers") or () if lb.get("targetGroupArn")]


def describe_service(
    ecs: Any, cluster: str, service: str, env: EnvConfig | None = None, *, deleted: bool = False
) -> dict[str, Any]:
    """The service, or a UsageError naming the cluster and the stack that creates it (``env``'s Fargate stack). An
    INACTIVE service (ECS deleted it: ``inv destroy``, its stack's deletion or by hand; it lists it a while longer),
    when there is no other of its name, is :func:`being_deleted`'s error, not "not found"; with ``deleted`` it is
    answered instead (its caller tells it as deleted). A DRAINING one (being deleted) is answered: its caller judges
    it (:func:`refuse_unrollable`)."""
    try:
        # its tags too: a release command that failed after a first deploy marks the service (deploykit.release)
        answer = ecs.describe_services(cluster=cluster, services=[service], include=["TAGS"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ClusterNotFoundException":
            raise no_cluster(cluster, env) from None
        raise
    found = list(answer.get("services", []))
    services = [s for s in found if s.get("status") != "INACTIVE"] or (found if deleted else [])
    if services:
        return dict(services[0])
    if found:  # INACTIVE only: ECS deleted it
        raise being_deleted(service, cluster, env, "INACTIVE", so=GONE)
    raise no_service(service, cluster, env)


def being_deleted(
    service: str,
    cluster: str,
    env: EnvConfig | None,
    status: str,
    *,
    answered: str = "",
    so: str = "it cannot be rolled out",
) -> ServiceBeingDeleted:
    """ECS is deleting the service, or has (DRAINING, INACTIVE; UpdateService: ServiceNotActiveException): no
    rerun can roll it, the stack that defines it must make it again. ``status``: DRAINING or INACTIVE, or "" when
    ECS did not say which (``answered``: what it said instead); ``so``: what that means for the command (a wait: the
    rollout it waits for cannot finish). The first line says the state ECS gave: "is being deleted" (DRAINING), "was
    deleted" (INACTIVE), both only when it did not say which. The next step is the state's: a service being deleted
    (DRAINING) can be made again only once ECS has finished (CreateService refuses a name still draining), one deleted
    (INACTIVE) at once."""
    health = f"inv health --env {env.name}" if env else "inv health"
    when = {
        "DRAINING": f"once ECS has finished deleting it ({health} shows it INACTIVE, or not found, then), ",
        "INACTIVE": "",
    }.get(status, f"once ECS has finished deleting it (it may have: {health} says whether), ")
    state = {"DRAINING": "is being deleted", "INACTIVE": "was deleted"}.get(status, "is being deleted or was deleted")
    why = f"status {status}" if status else answered
    return ServiceBeingDeleted(
        f"ECS service {service!r} in cluster {cluster!r} {state} ({why}): {so}; nothing was changed",
        next_step=f"{when}deploy the stack that defines it: {_create_command(env)} ({_not_made_again(env)})",
    )


def other_controller(service: str, controller: str, env: EnvConfig | None, why: str = "") -> UsageError:
    """The service is deployed by another deployment controller than ECS's own (CODE_DEPLOY, EXTERNAL): UpdateService
    refuses it a new revision, whatever the rerun. ``why``: what ECS answered."""
    fargate = env.stacks.fargate if env else "the Fargate stack"
    by = {
        "CODE_DEPLOY": "CodeDeploy (an AppSpec naming the revision to run)",
        "EXTERNAL": "the tool that makes its task sets",
    }
    return UsageError(
        f"ECS service {service!r} is deployed by its {controller} deployment controller"
        + (f" ({why})" if why else "")
        + ": deploykit rolls out only services ECS deploys itself (deployment controller ECS); nothing was changed",
        next_step=f"deploy it with {by.get(controller, 'that controller')}; if this is not the service "
        f"{fargate} makes (with the ECS controller: cdk/stacks/fargate_stack.py), fix 'cluster' and 'service' in "
        "deploy.toml",
    )


def refuse_unrollable(service: Mapping[str, Any], cluster: str, env: EnvConfig | None) -> None:
    """UsageError, before anything is changed, for a service UpdateService would refuse a new revision whatever the
    rerun: one ECS is deleting (DRAINING), or one another controller deploys (CODE_DEPLOY, EXTERNAL)."""
    name = str(service.get("serviceName", "?"))
    if service.get("status") in ("DRAINING", "INACTIVE"):
        raise being_deleted(name, cluster, env, str(service.get("status")))
    controller = str((service.get("deploymentController") or {}).get("type") or "ECS")
    if controller != "ECS":
        raise other_controller(name, controller, env)


# how UpdateService names the controller it refuses for ("... with a CODE_DEPLOY controller ...", "... services with
# a EXTERNAL deployment controller ..."); not a launch type EXTERNAL (ECS Anywhere) alone
_CONTROLLER = re.compile(r"\b(CODE_DEPLOY|EXTERNAL)\b(?=.*\bcontroller\b)", re.IGNORECASE | re.DOTALL)


def update_refused(exc: ClientError, cluster: str, service: str, env: EnvConfig | None) -> UsageError | None:
    """The UsageError for an UpdateService refusal no rerun helps (the state must be fixed first): the cluster or the
    service gone, the service being deleted, another deployment controller; None for any other error (throttling,
    a server error: a rerun may pass), to be raised as it is."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    answered = f"{code}: {message}".rstrip(": ")
    if code == "ClusterNotFoundException":
        return no_cluster(cluster, env)
    if code == "ServiceNotFoundException":
        return no_service(service, cluster, env)
    if code == "ServiceNotActiveException":
        return being_deleted(service, cluster, env, "", answered=answered)
    controller = _CONTROLLER.search(message) if code == "InvalidParameterException" else None
    if controller:
        return other_controller(service, controller.group(1).upper(), env, answered)
    return None


def update_service(client: Any, cluster: str, service: str, env: EnvConfig | None, **changes: Any) -> dict[str, Any]:
    """UpdateService of ``service`` with ``changes`` (a revision, a forced deployment): a refusal no rerun helps
    raised as :func:`update_refused`'s UsageError; any other error (throttled, a server error: a rerun may pass)
    as it is."""
    try:
        return dict(client.update_service(cluster=cluster, service=service, **changes))
    except ClientError as exc:  # gone or changed since it was read: a rerun would be refused the same
        refused = update_refused(exc, cluster, service, env)
        if refused is None:
            raise
        raise refused from None


def split_image(image: str) -> tuple[str, str] | None:
    """``registry/repository:tag`` → (``registry/repository``, ``tag``); None for an untagged or digest reference."""
    repository, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or "@" in image:
        return None
    return repository, tag


def image_repository(image: str) -> str:
    """``host/repo`` of ``host/repo:tag`` (a digest left out; no tag: the name as it is)."""
    name = image.split("@", 1)[0]
    return (split_image(name) or (name, ""))[0]


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``repo:tag``, ``host:port/repo:tag@sha256:...``); None without one."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[-1] if ":" in last else None


def container_image(task_definition: dict[str, Any], container: str) -> str:
    """The image of the named container, or a UsageError listing the containers there are."""
    for definition in task_definition.get("containerDefinitions", []):
        if definition.get("name") == container:
            return str(definition["image"])
    names = ", ".join(d.get("name", "?") for d in task_definition.get("containerDefinitions", []))
    raise UsageError(
        f"task definition {task_definition.get('family')}:{task_definition.get('revision')} has no "
        f"container {container!r} (it has: {names})",
        next_step="fix 'container' in deploy.toml",
    )


class TaskDefinitions:
    """Reads task definitions, each ARN once (a revision never changes). One per command (:meth:`of`): the revision
    deploy.auto reads as live is the one register-taskdef starts from, the one it registers is the one roll-service
    and wait-healthy look for, each described once. Safe from any thread (two may both read one ARN)."""

    def __init__(self, ecs: Any) -> None:
        self.ecs = ecs
        self._cache: dict[str, tuple[dict[str, Any], list[dict[str, str]]]] = {}
        # (family, container, image) → the newest revision that runs it: listed, or as register-taskdef chose it
        self._with_image: HandedOn[tuple[str, str, str], str | None] = HandedOn(lambda key: self._listed(*key))

    @classmethod
    def of(cls, aws: AwsFactory) -> TaskDefinitions:
        """The command's task definitions: one per AWS factory."""
        return aws.shared(_task_definitions)

    def remember(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Keep what DescribeTaskDefinition or RegisterTaskDefinition answered; its task definition."""
        td = answer["taskDefinition"]
        self._cache[td["taskDefinitionArn"]] = (td, list(answer.get("tags") or []))
        return dict(td)

    def get(self, arn: str) -> dict[str, Any]:
        return self._fetch(arn)[0]

    def tags(self, arn: str) -> list[dict[str, str]]:
        return self._fetch(arn)[1]

    def _fetch(self, arn: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        if arn not in self._cache:
            td = self.remember(self.ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"]))
            self._cache[arn] = self._cache[td["taskDefinitionArn"]]  # asked for as family:revision or ARN
        return self._cache[arn]

    def image(self, arn: str, container: str) -> str:
        return container_image(self.get(arn), container)

    def chosen(self, arn: str, container: str, image: str) -> None:
        """register-taskdef registered ``arn`` for ``container`` = ``image`` (or found it newest among those
        running it): the revision the next :meth:`latest_with_image` gives (once), without listing them again."""
        self._with_image.keep((family_of(arn), container, image), arn)

    def chosen_revision(self, family: str, container: str, image: str) -> str | None:
        """The revision register-taskdef chose for ``container`` = ``image`` (:meth:`chosen`), taken; None when it
        chose none. Nothing is read."""
        return self._with_image.take_kept((family, container, image), None)

    def latest_with_image(self, family: str, container: str, image: str) -> str | None:
        """The newest ACTIVE revision of ``family`` whose ``container`` runs ``image``: the one register-taskdef
        just registered or found (:meth:`chosen`), else listed."""
        return self._with_image.take((family, container, image))

    def _listed(self, family: str, container: str, image: str, limit: int = 20) -> str | None:
        for arn in self._newest_first(family)[:limit]:
            if family_of(arn) == family and self.image(arn, container) == image:
                return arn
        return None

    def latest(self, family: str) -> str | None:
        """The newest ACTIVE revision of ``family`` (listed; not described)."""
        return next((arn for arn in self._newest_first(family) if family_of(arn) == family), None)

    def _newest_first(self, family: str) -> list[str]:
        """ACTIVE revisions of ``family``, newest first (sorted here too: not every ECS sorts)."""
        answer = self.ecs.list_task_definitions(familyPrefix=family, status="ACTIVE", sort="DESC")
        arns = [str(a) for a in answer.get("taskDefinitionArns", [])]
        return sorted(arns, key=revision_number, reverse=True)


def _task_definitions(aws: AwsFactory) -> TaskDefinitions:
    return TaskDefinitions(aws.client("ecs"))


def family_of(arn: str) -> str:
    """The family a task definition's ARN (or ``family:revision``) names: no call."""
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def services(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any]]:
    """The command's reads of a service by (cluster, service) (:func:`describe_service`): register-taskdef reads it,
    and roll-service, which comes next and finds it as it was (registering a revision does not change the service),
    takes it instead of describing it again."""
    return aws.shared(_services)


def _services(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any]]:
    client = aws.client("ecs")
    return HandedOn(lambda key: describe_service(client, key[0], key[1], aws.env))


DESCRIBE_TASKS_BATCH = 100  # DescribeTasks takes at most 100 tasks


def cluster_tasks(
    client: Any, cluster: str, desired: str, family: str | None = None, *, service: str | None = None
) -> list[dict[str, Any]]:
    """The tasks of ``cluster`` whose desired status is ``desired`` (RUNNING: pending and running ones too; STOPPED:
    those ECS still lists, an hour's worth: more than a page), of ``family`` or of ``service`` only when given: every
    page listed, then described in batches."""
    listing: dict[str, Any] = {"cluster": cluster, "desiredStatus": desired, **({"family": family} if family else {})}
    if service:
        listing["serviceName"] = service
    arns: list[str] = []
    for page in client.get_paginator("list_tasks").paginate(**listing):
        arns += [str(a) for a in page.get("taskArns") or ()]
    tasks: list[dict[str, Any]] = []
    for start in range(0, len(arns), DESCRIBE_TASKS_BATCH):
        batch = arns[start : start + DESCRIBE_TASKS_BATCH]
        tasks += client.describe_tasks(cluster=cluster, tasks=batch).get("tasks") or []
    return tasks


def revision_number(arn: str) -> int:
    """A task definition's revision, from its ARN or ``family:revision`` (0 when it names none): no call."""
    tail = arn.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def active_revisions(client: Any, family: str) -> list[str]:
    """Every ACTIVE revision of exactly ``family`` (every page read), newest first (sorted here too)."""
    arns: list[str] = []
    paginator = client.get_paginator("list_task_definitions")
    for page in paginator.paginate(familyPrefix=family, status="ACTIVE", sort="DESC"):
        arns += [str(a) for a in page.get("taskDefinitionArns") or () if family_of(str(a)) == family]
    return sorted(arns, key=revision_number, reverse=True)


# -- register-taskdef ---------------------------------------------------------------------------


def cpu_architecture(taskdef: dict[str, Any]) -> str | None:
    """The CPU architecture a task definition's tasks run on (``X86_64``, ``ARM64``): its runtimePlatform's, else
    Fargate's default, X86_64; None for one that may run on EC2 too (the instance decides)."""
    named = (taskdef.get("runtimePlatform") or {}).get("cpuArchitecture")
    if named:
        return str(named)
    return "X86_64" if taskdef.get("requiresCompatibilities") == ["FARGATE"] else None


def derive_registration(
    current: dict[str, Any], tags: Iterable[dict[str, str]], container: str, image: str, git_sha: str
) -> dict[str, Any]:
    """RegisterTaskDefinition arguments: ``current`` with only ``container``'s image changed.

    Environment, secrets, health check, logging, sizes and roles are carried over untouched; the
    revision is tagged with the git SHA and image tag it was made for.
    """
    container_image(current, container)  # raises when the container is not there
    kwargs = {key: copy.deepcopy(current[key]) for key in REGISTER_FIELDS if current.get(key) not in (None, [])}
    for definition in kwargs["containerDefinitions"]:
        if definition["name"] == container:
            definition["image"] = image
    kept = [t for t in tags if t["key"] not in (GIT_SHA_TAG, IMAGE_TAG_TAG)]
    kwargs["tags"] = [
        *kept,
        {"key": GIT_SHA_TAG, "value": git_sha},
        {"key": IMAGE_TAG_TAG, "value": image.rsplit(":", 1)[-1]},
    ]
    return kwargs


def revision_running(
    client: Any, taskdefs: TaskDefinitions, current: str, container: str, image: str, git_sha: str
) -> tuple[str, bool]:
    """A revision of ``current``'s family whose ``container`` runs ``image``: the newest ACTIVE one that does, else one
    registered now from ``current`` with only that image changed (:func:`derive_registration`); (its ARN, whether it
    was registered now)."""
    arn = taskdefs.latest_with_image(family_of(current), container, image)
    if arn is not None:
        return arn, False
    wanted = derive_registration(taskdefs.get(current), taskdefs.tags(current), container, image, git_sha)
    return str(taskdefs.remember(client.register_task_definition(**wanted))["taskDefinitionArn"]), True


def same_registration(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two RegisterTaskDefinition argument sets make the same revision; tags are metadata."""
    return {k: v for k, v in a.items() if k != "tags"} == {k: v for k, v in b.items() if k != "tags"}


# -- wait-healthy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetState:
    target: str  # "ip:port"
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Snapshot:
    """One poll of everything wait-healthy looks at."""

    service: dict[str, Any]
    images: dict[str, str]  # task-definition ARN → image of our container
    running_tasks: list[dict[str, Any]] = field(default_factory=list)  # tasks of the PRIMARY deployment
    stopped_tasks: list[dict[str, Any]] = field(default_factory=list)  # of our deployment, stopped: failures
    targets: list[TargetState] = field(default_factory=list)  # of the new tasks
    expected_targets: int = 0
    # of our deployment, stopped from outside the release (a person's StopTask, Fargate Spot, a Fargate retirement): no
    # failures, ECS replaces them (:func:`stopped_from_outside`)
    stopped_from_outside: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    state: str  # "waiting" | "healthy" | "failed"
    summary: str
    reason: str = ""
    # ECS's deployment circuit breaker already put the previous deployment back: a failure that needs no
    # rollback of ours (it would only repeat it)
    rolled_back_by_ecs: bool = False
    # Nothing to wait for: the service was never asked to run the image (wait-healthy alone, before roll-service):
    # bad input, not a failed rollout
    not_asked: bool = False


def our_deployments(
    service: dict[str, Any], images: dict[str, str], image: str, deployment: str = ""
) -> list[dict[str, Any]]:
    """The deployments rolling out ``image``: those running it that are PRIMARY or not COMPLETED. A COMPLETED
    ACTIVE one with the same image is the release being replaced (a rollback goes back to the image an older
    deployment still runs): its tasks stopping as they drain are not ours failing. ``deployment`` (a restart, whose
    deployment runs the very revision of the one it replaces): that deployment only, by its id."""
    if deployment:
        return [d for d in service.get("deployments", []) if d.get("id") == deployment]
    return [
        d
        for d in service.get("deployments", [])
        if images.get(d.get("taskDefinition", "")) == image
        and (d.get("status") == "PRIMARY" or d.get("rolloutState") != "COMPLETED")
    ]


def is_ours(d: Mapping[str, Any] | None, images: Mapping[str, str], image: str, deployment: str = "") -> bool:
    """Whether deployment ``d`` is the one waited for: the one of id ``deployment`` when given, else one running
    ``image``."""
    if d is None:
        return False
    if deployment:
        return d.get("id") == deployment
    return images.get(d.get("taskDefinition", "")) == image


def primary_deployment(service: dict[str, Any]) -> dict[str, Any] | None:
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY":
            return dict(deployment)
    return None


def rolling(service: dict[str, Any]) -> str:
    """What of ``service`` is still rolling out ("" when nothing): a deployment besides the PRIMARY, or a PRIMARY
    whose rollout has not COMPLETED."""
    deployments = service.get("deployments", [])
    primary = primary_deployment(service)
    if primary is not None and primary.get("rolloutState", "COMPLETED") != "COMPLETED":
        rev = revision_name(primary.get("taskDefinition", ""))
        return f"its deployment {primary.get('id', '?')} of {rev} is {primary.get('rolloutState')}"
    others = [d for d in deployments if d.get("status") != "PRIMARY"]
    if others:
        revs = ", ".join(revision_name(d.get("taskDefinition", "")) for d in others)
        return f"{len(others)} older deployment(s) of {revs} still run tasks"
    return ""


def revision_name(arn: str) -> str:
    """``family:revision`` of a task definition's ARN (or of ``family:revision`` itself): no call."""
    return arn.rsplit("/", 1)[-1]


def is_older(arn: str, than: str) -> bool:
    """Whether task definition ``arn`` is an older revision of the family of ``than`` (no call); False for another
    family."""
    family, _, number = revision_name(arn).rpartition(":")
    other_family, _, other = revision_name(than).rpartition(":")
    return family == other_family and number.isdigit() and other.isdigit() and int(number) < int(other)


def revision_label(arn: str, images: dict[str, str]) -> str:
    """``family:revision``, and the image tag our container runs in it when ``images`` knows it."""
    rev = revision_name(arn)
    image = images.get(arn, "")
    return f"{rev} ({image.rsplit(':', 1)[-1]})" if image else rev


def summarize(snapshot: Snapshot) -> str:
    """One line of the rollout's state: deployments, counts, targets."""
    parts = []
    for d in snapshot.service.get("deployments", []):
        label = revision_label(d.get("taskDefinition", ""), snapshot.images)
        rollout = d.get("rolloutState", "")
        parts.append(
            f"{d.get('status')} {label} {rollout} running {d.get('runningCount', 0)}/{d.get('desiredCount', 0)}"
            + (f" pending {d['pendingCount']}" if d.get("pendingCount") else "")
        )
    text = " · ".join(parts) or "no deployments"
    if snapshot.expected_targets:
        healthy = sum(1 for t in snapshot.targets if t.state == "healthy")
        states = sorted({t.state for t in snapshot.targets if t.state != "healthy"})
        text += f" · targets {healthy}/{snapshot.expected_targets} healthy"
        if states:
            text += f" ({', '.join(states)})"
    return text


def assess(snapshot: Snapshot, image: str, *, seen_ours_primary: bool, deployment: str = "") -> Verdict:
    """Decide from one snapshot whether the rollout of ``image`` succeeded, failed or goes on.

    Success needs all of: the PRIMARY deployment runs ``image``, its rolloutState is COMPLETED (or
    it is the only deployment, for services without rollout states), running equals desired, and
    every ALB target of its tasks is healthy. A PRIMARY that runs something else after ours was
    seen (a circuit-breaker rollback) is a failure, never a success. ``deployment`` (a restart): the
    PRIMARY must be that deployment, by its id; another one after it was seen is the failure.
    """
    service = snapshot.service
    summary = summarize(snapshot)
    ours = our_deployments(service, snapshot.images, image, deployment)
    for one in ours:
        if one.get("rolloutState") == "FAILED":
            reason = one.get("rolloutStateReason") or "no reason given"
            rolled_back = primary_deployment(service) not in (None, one)
            what = "circuit breaker rolled the service back" if rolled_back else "rollout FAILED"
            return Verdict("failed", summary, f"{what}: {reason}", rolled_back_by_ecs=rolled_back)
    primary = primary_deployment(service)
    if primary is None:
        return Verdict("waiting", summary, "the service has no PRIMARY deployment yet")
    if deployment and primary.get("id") != deployment:
        if seen_ours_primary or ours:
            label = revision_label(primary.get("taskDefinition", ""), snapshot.images)
            back_to = f"{primary.get('id', '?')} of {label}"
            reason = _rollback_reason(service) or "no reason in the service events"
            return Verdict(
                "failed",
                summary,
                f"deployment {deployment} was replaced by {back_to}: {reason}",
                rolled_back_by_ecs=True,
            )
        return Verdict("waiting", summary, f"the service accepted deployment {deployment}; it is not listed yet")
    primary_image = snapshot.images.get(primary.get("taskDefinition", ""), "")
    if not deployment and primary_image != image:
        back_to = revision_label(primary.get("taskDefinition", ""), snapshot.images)
        if seen_ours_primary or ours:
            reason = _rollback_reason(service) or "no reason in the service events"
            return Verdict(
                "failed",
                summary,
                f"circuit breaker rolled the service back to {back_to}: {reason}",
                rolled_back_by_ecs=True,
            )
        if snapshot.images.get(service.get("taskDefinition", "")) == image:
            # UpdateService was accepted but its deployment is not listed yet (eventual consistency)
            return Verdict("waiting", summary, "the service accepted the new revision; its deployment has not started")
        return Verdict(
            "failed",
            summary,
            f"the service is not rolling out {image}: its PRIMARY deployment runs {back_to}",
            # unless ECS may have rolled it back, its deployment gone before the first look: a failed rollout
            not_asked=not _rollback_reason(service),
        )
    for task in snapshot.stopped_tasks:
        return Verdict("failed", summary, f"a new task stopped: {describe_stopped(task)}")
    if primary.get("rolloutState") == "FAILED":
        return Verdict("failed", summary, f"rollout FAILED: {primary.get('rolloutStateReason', '')}")
    desired = service.get("desiredCount", 0)
    done_rolling = primary.get("rolloutState") == "COMPLETED" or (
        "rolloutState" not in primary and len(service.get("deployments", [])) == 1
    )
    if not done_rolling:
        return Verdict("waiting", summary, f"rollout {primary.get('rolloutState', 'in progress')}")
    if len(service.get("deployments", [])) > 1:
        return Verdict("waiting", summary, "old deployments are still draining")
    if primary.get("runningCount", 0) != desired or service.get("runningCount", 0) != desired:
        return Verdict("waiting", summary, f"running {primary.get('runningCount', 0)} of {desired} desired tasks")
    if desired == 0:  # rolled, running 0 of 0: no task ever ran the image, nothing was verified
        return Verdict("failed", summary, f"{NO_TASK_WANTED}: no task runs {image}, nothing to verify it by")
    if snapshot.expected_targets:
        unhealthy = [t for t in snapshot.targets if t.state != "healthy"]
        if unhealthy or len(snapshot.targets) < snapshot.expected_targets:
            detail = "; ".join(f"{t.target} {t.state}{': ' + t.reason if t.reason else ''}" for t in unhealthy)
            missing = snapshot.expected_targets - len(snapshot.targets)
            if missing > 0:
                detail = (detail + "; " if detail else "") + f"{missing} target(s) not registered yet"
            return Verdict("waiting", summary, f"targets not all healthy: {detail}")
    return Verdict("healthy", summary)


ROLLBACK_EVENT_MARGIN = timedelta(minutes=1)
NO_TASK_WANTED = "the service wants 0 tasks"  # scaled to 0 by hand or by its autoscaling (inv pause is woken first)


def _rollback_reason(service: dict[str, Any]) -> str:
    """The newest service event that says ECS rolled a deployment back, "" for none. One older than the PRIMARY
    deployment (by more than a minute: ECS makes the deployment it rolls back to as it says so) is of a rollback
    before it, not of this one: ECS keeps a service's last 100 events, days of them."""
    primary = primary_deployment(service) or {}
    made = primary.get("createdAt")
    for event in service.get("events", []):
        message, when = str(event.get("message", "")), event.get("createdAt")
        if isinstance(made, datetime) and isinstance(when, datetime) and when < made - ROLLBACK_EVENT_MARGIN:
            return ""  # newest first: the rest are older still
        if "circuit breaker" in message or "rolling back" in message or "deployment failed" in message:
            return message
    return ""


def describe_stopped(task: dict[str, Any]) -> str:
    parts = [f"{task.get('taskArn', '?').rsplit('/', 1)[-1]}: {task.get('stoppedReason', 'no reason given')}"]
    for c in task.get("containers", []):
        bits = []
        if c.get("exitCode") is not None:
            bits.append(f"exit code {c['exitCode']}")
        if c.get("reason"):
            bits.append(str(c["reason"]))
        if bits:
            parts.append(f"container {c.get('name')}: {', '.join(bits)}")
    return "; ".join(parts)


def task_to_explain(snapshot: Snapshot) -> dict[str, Any] | None:
    """The task whose log says why a rollout failed: the last of ours to stop, else the newest running one."""

    def newest(tasks: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
        dated = [t for t in tasks if isinstance(t.get(key), datetime)]
        return max(dated, key=lambda t: t[key]) if dated else (tasks[-1] if tasks else None)

    return newest(snapshot.stopped_tasks, "stoppedAt") or newest(snapshot.running_tasks, "startedAt")


# -- the log of a task ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLog:
    """The last lines a task's container wrote, from CloudWatch Logs; ``problem`` says why there are none."""

    task_id: str
    group: str
    stream: str
    lines: list[str]
    problem: str = ""


def log_configuration(task_definition: dict[str, Any], container: str) -> dict[str, Any]:
    """The logConfiguration of ``container`` in the task definition ({} when it has none, or no such container)."""
    for definition in task_definition.get("containerDefinitions", []):
        if definition.get("name") == container:
            return dict(definition.get("logConfiguration") or {})
    return {}


def awslogs(task_definition: dict[str, Any], container: str) -> tuple[str, str] | None:
    """(group, stream prefix: '' when none) where the awslogs driver sends ``container``'s output; None when it logs
    elsewhere."""
    config = log_configuration(task_definition, container)
    options = config.get("options") or {}
    if config.get("logDriver") != "awslogs" or not options.get("awslogs-group"):
        return None
    return str(options["awslogs-group"]), str(options.get("awslogs-stream-prefix") or "")


def log_stream(task_definition: dict[str, Any], container: str, task_arn: str) -> tuple[str, str] | None:
    """Where the awslogs driver sends ``container``'s output in the task: (group, ``<prefix>/<container>/<task
    id>``); None when it logs elsewhere or without a stream prefix (the stream is then named by a container id)."""
    found = awslogs(task_definition, container)
    if found is None or not found[1]:
        return None
    return found[0], f"{found[1]}/{container}/{task_arn.rsplit('/', 1)[-1]}"


def container_log(logs: Any, task_definition: dict[str, Any], container: str, task_arn: str) -> TaskLog | None:
    """The last lines ``container`` wrote in the task, when it logs to a stream of its own (awslogs with a prefix)."""
    where = log_stream(task_definition, container, task_arn)
    return read_task_log(logs, *where, limit=TASK_LOG_LINES) if where else None


def read_task_log(logs: Any, group: str, stream: str, *, limit: int) -> TaskLog:
    """The last ``limit`` lines of one stream (one GetLogEvents call). A failure to read is told, not raised: the
    log explains another failure, which it must not hide."""
    task_id = stream.rsplit("/", 1)[-1]
    try:
        answer = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=limit, startFromHead=False)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "ResourceNotFoundException":
            problem = _missing_log(logs, group)
        else:
            problem = f"could not read it ({code}: {exc.response['Error'].get('Message', '')})"
        return TaskLog(task_id, group, stream, [], problem)
    except BotoCoreError as exc:  # no answer at all (a dropped connection, a timeout)
        return TaskLog(task_id, group, stream, [], f"could not read it ({exc})")
    lines = [str(e.get("message", "")).rstrip("\n") for e in answer.get("events", [])]
    return TaskLog(task_id, group, stream, lines, "" if lines else "the stream is empty")


def _missing_log(logs: Any, group: str) -> str:
    """Which is missing, the group or the stream (not every CloudWatch Logs tells them apart in its error)."""
    try:
        logs.describe_log_streams(logGroupName=group, limit=1)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return "its log group is gone (a stack's rollback deletes the group it created)"
    except BotoCoreError:
        pass
    return "no such stream: the container wrote nothing"


TASK_LOG_LINES = 20  # lines of a failed task's log shown with the failure


def show_task_log(say: Callable[[str], None], task_log: TaskLog, container: str) -> None:
    where = f"CloudWatch Logs {task_log.group}, stream {task_log.stream}"
    if not task_log.lines:
        say(f"📜 no log of task {task_log.task_id}: {task_log.problem} ({where})")
        return
    say(f"📜 the last {len(task_log.lines)} lines {container} wrote in task {task_log.task_id} ({where}):")
    for line in task_log.lines:
        say(f"    {line}")


def last_line(task_log: TaskLog | None) -> str:
    """``; its last log line: …`` for a failure's message, or '' (:func:`quoted_line`)."""
    line = quoted_line(task_log, 200)
    return f"; its last log line: {line}" if line else ""


# what in a log line is a credential: a URL's password (scheme://user:PASSWORD@host), and the value of a key that
# names one (password=..., "token": "...", SECRET_KEY: ...)
_USERINFO = re.compile(r"(://[^\s:/@]*:)[^\s@/]+@")  # a user or none (redis://:PASSWORD@host)
_SECRET_VALUE = re.compile(
    r"""((?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|"""
    r"""authorization)["']?\s*[:=]\s*["']?)(?:Bearer\s+|Basic\s+)?[^\s"',;&}]+""",
    re.IGNORECASE,
)


def quoted_line(task_log: TaskLog | None, limit: int) -> str:
    """The task's last log line (``limit`` characters at most), its credentials masked (a URL's password, a
    password's or token's value): it goes into the failure's message, which the history record keeps and the chat
    is sent, for all to read who may not read the log group; "" when it wrote none. The log itself is shown whole."""
    if task_log is None or not task_log.lines:
        return ""
    line = _USERINFO.sub(r"\1***@", task_log.lines[-1].strip())
    return _SECRET_VALUE.sub(r"\1***", line)[:limit]


def scaled_in(task: Mapping[str, Any]) -> bool:
    """Whether ECS stopped a task scaling its service in (``Scaling activity initiated by ...``: a lower desired
    count, Application Auto Scaling, a pause): no failure of it, whenever it stopped."""
    return str(task.get("stoppedReason", "")).startswith("Scaling activity initiated by")


# ECS's stop codes (botocore's TaskStopCode) of a task stopped from outside the release, and who or what stopped it:
# ECS starts another in its place, and the stop says nothing of the release (:func:`stopped_from_outside`)
OUTSIDE_STOPS = {
    "UserInitiated": "a person (StopTask: {reason})",
    "SpotInterruption": "Fargate Spot taking its capacity back (SpotInterruption: {reason})",
    "TerminationNotice": "Fargate retiring it for maintenance (TerminationNotice: {reason})",
    "InfrastructureHealth": "AWS, for a fault of the infrastructure it ran on (InfrastructureHealth: {reason})",
}


def stopped_from_outside(task: Mapping[str, Any]) -> str | None:
    """Who or what stopped the task from outside the release, as the line that tells it names them ("a person
    (StopTask: REASON)", "Fargate Spot taking its capacity back (SpotInterruption: REASON)"); None for a task that
    stopped for any other reason. By stop code: ``UserInitiated`` (a person or their tool: StopTask),
    ``SpotInterruption`` (Fargate Spot took the capacity back), ``TerminationNotice`` (Fargate retired the task for
    maintenance), ``InfrastructureHealth`` (AWS stopped it for a fault of the host or network it ran on). ECS
    starts another in its place, and the stop says nothing of the release: no failure of it. The stop code names what
    ended the task first: one whose essential container exited (or that could not start) before it was stopped keeps
    ``EssentialContainerExited`` (``TaskFailedToStart``), a failure, whatever its stop reason says; and the reason of
    a person's stop is their own text (``aws ecs stop-task --reason``), never read as ECS's."""
    wording = OUTSIDE_STOPS.get(str(task.get("stopCode", "")))
    return wording.format(reason=task.get("stoppedReason") or "no reason given") if wording else None


def failed_task(task: Mapping[str, Any]) -> bool:
    """Whether a stopped task failed (its essential container exited, it could not start, it failed its health
    checks), rather than being stopped by a deployment, a scale-in, a person or Fargate
    (:func:`stopped_from_outside`)."""
    if stopped_from_outside(task):
        return False
    reason = str(task.get("stoppedReason", ""))
    return task.get("stopCode") in ("EssentialContainerExited", "TaskFailedToStart") or reason.startswith("Task failed")


def failing_container(task: dict[str, Any], task_definition: dict[str, Any], preferred: str) -> str:
    """The container whose log explains a failed task: one that exited with an error, else ``preferred`` when the
    task has it, else its first essential container."""
    for c in task.get("containers", []):
        if c.get("exitCode") not in (None, 0):
            return str(c.get("name"))
    names = [str(d.get("name")) for d in task_definition.get("containerDefinitions", [])]
    if preferred in names:
        return preferred
    essential = [
        str(d.get("name")) for d in task_definition.get("containerDefinitions", []) if d.get("essential", True)
    ]
    return (essential or names or [preferred])[0]


def explain_failed_service(
    ecs: Any,
    logs: Any,
    service_arn: str,
    since: datetime | None,
    *,
    container: str,
    say: Callable[[str], None],
    taskdefs: TaskDefinitions | None = None,
) -> list[str]:
    """Why a service's rollout failed in a stack deploy (CloudFormation says only "circuit breaker"): the last of its
    tasks to fail since ``since``, its stop reason and exit code as a line for the failure's message, and the last
    lines its container wrote, printed with ``say``. [] when no task failed or the service's ARN names no cluster."""
    parts = service_arn.rsplit(":", 1)[-1].split("/")  # service/<cluster>/<name>; the old format has no cluster
    if len(parts) != 3 or parts[0] != "service":
        return []
    cluster, name = parts[1], parts[2]
    tasks = cluster_tasks(ecs, cluster, "STOPPED", service=name)  # every page: the task that failed may be past 100
    failed = [
        t
        for t in tasks
        if failed_task(t) and (since is None or not isinstance(t.get("stoppedAt"), datetime) or t["stoppedAt"] >= since)
    ]
    if not failed:
        return []
    task = max(failed, key=lambda t: t["stoppedAt"].timestamp() if isinstance(t.get("stoppedAt"), datetime) else 0.0)
    definition = (taskdefs or TaskDefinitions(ecs)).get(task["taskDefinitionArn"])
    which = failing_container(task, definition, container)
    task_log = container_log(logs, definition, which, task["taskArn"])
    if task_log is not None:
        show_task_log(say, task_log, which)
    noun = "task" if len(failed) == 1 else "tasks"
    return [f"  {len(failed)} {noun} of {name} failed, the last: {describe_stopped(task)}{last_line(task_log)}"]


def task_endpoints(task: dict[str, Any], container_port: int | None) -> set[tuple[str, int]]:
    """The (ip, port) pairs under which a task can be registered as an ALB target."""
    pairs: set[tuple[str, int]] = set()
    ips = set()
    for attachment in task.get("attachments", []):
        for detail in attachment.get("details", []):
            if detail.get("name") == "privateIPv4Address":
                ips.add(detail["value"])
    for c in task.get("containers", []):
        for ni in c.get("networkInterfaces", []):
            if ni.get("privateIpv4Address"):
                ips.add(ni["privateIpv4Address"])
        for binding in c.get("networkBindings", []):
            host = binding.get("bindIP") or ""
            for ip in (ips | ({host} if host not in ("", "0.0.0.0") else set())) or {"127.0.0.1"}:
                if binding.get("hostPort"):
                    pairs.add((ip, int(binding["hostPort"])))
    if container_port:
        pairs.update((ip, container_port) for ip in ips)
    return pairs


def new_events(service: dict[str, Any], seen: set[str], since: datetime | None) -> list[dict[str, Any]]:
    """Service events not shown yet, oldest first, from ``since`` on."""
    fresh = []
    for event in service.get("events", []):
        event_id = str(event.get("id"))
        if event_id in seen:
            continue
        seen.add(event_id)
        created = event.get("createdAt")
        if since is not None and isinstance(created, datetime) and created < since:
            continue
        fresh.append(event)
    return sorted(fresh, key=_event_time)


def _event_time(event: dict[str, Any]) -> float:
    created = event.get("createdAt")
    return created.timestamp() if isinstance(created, datetime) else 0.0


# -- the polling loop -----------------------------------------------------------------------------


class RolloutWaiter:
    """Polls a service until :func:`assess` says healthy or failed, or the deadline passes.

    ``say(text)`` receives each state change and each new service event (already prefixed with the
    elapsed time); ``status(text)`` the current state for the progress line. A service ECS is deleting, or has
    (DRAINING, INACTIVE: ``inv destroy``, its stack or itself deleted), ends the wait at once: no rollout of it can
    finish (:func:`being_deleted`, raised).
    """

    def __init__(
        self,
        ecs: Any,
        elbv2: Any,
        clock: Any,
        *,
        say: Any = print,
        status: Any = None,
        taskdefs: TaskDefinitions | None = None,
        env: EnvConfig | None = None,
    ) -> None:
        self.ecs, self.elbv2, self.clock = ecs, elbv2, clock
        self.env = env  # the environment, for the next step of a service gone or being deleted
        self.say = say
        self.status = status or (lambda _text: None)
        self.taskdefs = taskdefs or TaskDefinitions(ecs)
        self.last: Snapshot | None = None  # the last poll's answers: what a failure is explained from

    def wait(
        self,
        *,
        cluster: str,
        service: str,
        container: str,
        image: str,
        timeout: float,
        poll: float,
        deployment: str = "",
        since: datetime | None = None,
    ) -> Verdict:
        """``deployment``: wait for that deployment (by id) rather than for any running ``image`` (a restart).
        ``since``: only what happened from then on counts, events and stopped tasks, though the deployment is older
        (a paused service scaled up again: the tasks its pause stopped are not failures); by default, from when the
        deployment was made."""
        start = self.clock.monotonic()
        fixed = since is not None
        since = since or self.clock.now()
        seen_events: set[str] = set()
        told_stopped: set[str] = set()  # the tasks stopped from outside the release, said once each
        seen_ours_primary = False
        last_summary = ""
        interval = poll
        verdict = Verdict("waiting", "not polled yet", "")
        first = True
        while True:
            polled = self.clock.monotonic()
            elapsed = polled - start
            try:
                snapshot = self.snapshot(cluster, service, container, image, since, deployment, fixed=fixed)
            except ClientError as exc:
                if not is_throttling(exc):
                    raise
                interval = min(interval * 2, poll * 8)
                self.say(
                    f"[{elapsed:6.1f}s] AWS is throttling ({exc.response['Error']['Code']}); "
                    f"polling every {interval:.0f}s"
                )
            else:
                interval = poll
                self.last = snapshot
                primary = primary_deployment(snapshot.service)
                if primary is not None and is_ours(primary, snapshot.images, image, deployment):
                    seen_ours_primary = True
                    if first and not fixed and isinstance(primary.get("createdAt"), datetime):
                        since = min(since, primary["createdAt"])
                first = False
                for event in new_events(snapshot.service, seen_events, since):
                    self.say(f"[{elapsed:6.1f}s] event: {event.get('message', '')}")
                for task in snapshot.stopped_from_outside:
                    if str(task.get("taskArn")) not in told_stopped:
                        told_stopped.add(str(task.get("taskArn")))
                        self.say(
                            f"[{elapsed:6.1f}s] task {str(task.get('taskArn', '?')).rsplit('/', 1)[-1]} was stopped by "
                            f"{stopped_from_outside(task)}: no failure of the release; ECS starts another"
                        )
                verdict = assess(snapshot, image, seen_ours_primary=seen_ours_primary, deployment=deployment)
                if verdict.summary != last_summary:
                    self.say(f"[{elapsed:6.1f}s] {verdict.summary}")
                    last_summary = verdict.summary
                self.status(verdict.reason or verdict.summary)
                if verdict.state != "waiting":
                    return verdict
            if self.clock.monotonic() - start + interval > timeout:
                return Verdict(
                    "failed",
                    verdict.summary,
                    f"deadline of {timeout:g}s passed while waiting: {verdict.reason or 'no answer'}",
                )
            # a poll every ``interval``, however long its reads took (on AWS ~7 calls one after the other)
            self.clock.sleep(max(0.0, interval - (self.clock.monotonic() - polled)))

    def snapshot(
        self,
        cluster: str,
        service_name: str,
        container: str,
        image: str,
        since: datetime,
        deployment: str = "",
        *,
        fixed: bool = False,
    ) -> Snapshot:
        """The service, then at once what it says to look at: the running tasks of our PRIMARY, the stopped ones
        of our deployment, the health of its target groups (three round trips, not six one after the other).
        ``deployment`` (a restart: the tasks it replaces run the same revision): only the tasks it started.
        ``fixed``: only tasks stopped from ``since`` on are ours (a wake: the deployment's tasks a pause stopped
        before it are not)."""
        service = describe_service(self.ecs, cluster, service_name, self.env, deleted=True)
        if service.get("status") in ("DRAINING", "INACTIVE"):  # it never comes back: no deadline to wait for
            raise being_deleted(service_name, cluster, self.env, str(service["status"]), so="its rollout cannot finish")
        images: dict[str, str] = {}
        arns = [d.get("taskDefinition", "") for d in service.get("deployments", [])] + [service["taskDefinition"]]
        for arn in arns:
            images[arn] = self.taskdefs.image(arn, container)
        primary = primary_deployment(service)
        ours = our_deployments(service, images, image, deployment)
        # target group ARN → the container port registered in it
        groups = {
            str(lb["targetGroupArn"]): lb.get("containerPort")
            for lb in service.get("loadBalancers", [])
            if lb.get("targetGroupArn")
        }
        reads: dict[str, Callable[[], Any]] = {}
        if is_ours(primary, images, image, deployment):
            reads["RUNNING"] = partial(self._tasks, cluster, service_name, "RUNNING")
            for group in groups:  # read with the tasks: they are matched to its targets below
                reads[group] = partial(self.elbv2.describe_target_health, TargetGroupArn=group)
        if ours:
            reads["STOPPED"] = partial(self._tasks, cluster, service_name, "STOPPED")
        found = at_once(reads)
        running = [
            t
            for t in found.get("RUNNING", [])
            if primary
            and t.get("taskDefinitionArn") == primary["taskDefinition"]
            and t.get("lastStatus") == "RUNNING"
            and (not deployment or t.get("startedBy") == deployment)
        ]
        our_ids = {d.get("id") for d in ours}
        our_arns = {d.get("taskDefinition") for d in ours}
        stopped: list[dict[str, Any]] = []
        from_outside: list[dict[str, Any]] = []
        for task in found.get("STOPPED", []):
            if task.get("taskDefinitionArn") not in our_arns or scaled_in(task):
                continue
            stopped_at = task.get("stoppedAt")
            since_then = isinstance(stopped_at, datetime) and stopped_at >= since
            if fixed and not since_then:
                continue
            if task.get("startedBy") in our_ids or (since_then and not deployment):
                (from_outside if stopped_from_outside(task) else stopped).append(task)
        health = {group: found[group] for group in groups if group in found}
        targets = target_states(health, groups, running)
        return Snapshot(service, images, running, stopped, targets, len(groups) * len(running), from_outside)

    def _tasks(self, cluster: str, service: str, desired: str) -> list[dict[str, Any]]:
        """The service's tasks whose desired status is ``desired``: every page listed (100 a page), described in
        batches (the stopped tasks of earlier deployments may fill the first page)."""
        return cluster_tasks(self.ecs, cluster, desired, service=service)


def target_states(
    health: dict[str, dict[str, Any]], container_ports: dict[str, Any], tasks: list[dict[str, Any]]
) -> list[TargetState]:
    """The ALB target state of each task, per target group (DescribeTargetHealth answers by group ARN)."""
    states: list[TargetState] = []
    for group, answer in health.items():
        by_target = {
            (d["Target"]["Id"], int(d["Target"].get("Port", 0))): d.get("TargetHealth", {})
            for d in answer.get("TargetHealthDescriptions", [])
        }
        for task in tasks:
            for pair in sorted(task_endpoints(task, container_ports.get(group))):
                if pair in by_target:
                    state = by_target[pair]
                    states.append(
                        TargetState(
                            f"{pair[0]}:{pair[1]}",
                            str(state.get("State", "unknown")),
                            str(state.get("Description") or state.get("Reason") or ""),
                        )
                    )
                    break
    return states
