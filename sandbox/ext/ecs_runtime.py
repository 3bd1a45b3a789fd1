"""ECS that runs: each task of a service is a container on the local Docker engine, and services roll
as ECS's rolling update does.

What plain moto lacks, fixed here:

- ``service_deployment_configuration``: moto drops a service's deploymentConfiguration and health-check
  grace period; they are kept (and shown by DescribeServices) because the rollout obeys them.
  ``settings_from_cloudformation``: the same for a service created or updated by a CloudFormation stack
  (:meth:`EcsRuntime.configure_service`, with its LoadBalancers), whose resource then waits on
  :meth:`EcsRuntime.deployment_state` as CloudFormation waits for a service to stabilize.
- ``health_check_on_the_task_port``: on the host network every task has its own port, so a container health
  check that names the container port on the loopback (``127.0.0.1:8000``, ``localhost:8000``) is pointed
  at the task's port, as each task has its own address and port 8000 on ECS.
- ``tasks_that_run``: a service's tasks are containers (host network, a port from ``[sandbox]
  task_ports`` passed as PORT, HOST=127.0.0.1, the task definition's image, environment and health
  check; as on ECS, the image's own HEALTHCHECK is not run). ListTasks and DescribeTasks show them with
  their true states, stop reasons and exit codes.
- ``rolling_deployments``: a new task definition makes a new PRIMARY deployment beside the ACTIVE old
  one. New tasks start (up to maximumPercent), are registered with their target groups a tick after
  their container runs (as ECS does once its agent has reported it), become healthy (container health
  check, then ALB target health), and only then are old tasks deregistered, drained (until their
  targets' deregistration is complete: at most the target group's deregistration delay, less when
  nothing is in flight, see ``sandbox.ext.alb``) and stopped, never going below minimumHealthyPercent.
  Then the old deployment goes and the PRIMARY is COMPLETED. Counts, task lists and service events are
  true.
- ``circuit_breaker``: new tasks that fail to start, exit or stay unhealthy count as failed; at the
  threshold the deployment is FAILED with a reason and, with rollback on, the previous task
  definition is PRIMARY again while the failed deployment's tasks stop. A task whose container exits
  has its targets deregistered, as ECS does (left registered, the target stayed unhealthy, and the next
  task given its port started behind it, its health checks counted from unhealthy).
- Desired-count changes scale the PRIMARY deployment.
- ``awslogs``: what a task's container writes (stdout and stderr) goes to CloudWatch Logs as the awslogs log
  driver sends it: to the task definition's ``awslogs-group``, stream ``<awslogs-stream-prefix>/<container>/<task
  id>``, each line with the container's own timestamp, about once a second while the task runs and in full when it
  stops. A group that does not exist stops the task at start (ResourceInitializationError), as on Fargate, unless
  ``awslogs-create-group`` is ``true``.
- ``secrets``: a container's ``secrets`` reach it as environment variables, fetched when the task starts as ECS's
  agent fetches them: an SSM parameter by name or ARN (decrypted), a Secrets Manager secret by ARN, with its
  optional JSON key, version stage and version id (``arn:...:secret:name-AbCdEf:key:AWSCURRENT:``). One that
  cannot be fetched (missing, deleted, without that key) stops the task at start with ECS's
  ``ResourceInitializationError: unable to pull secrets or registry auth: ...`` (moto ignored them: the container
  started without its secrets).
- ``standalone_tasks``: RunTask runs a task of its own (no service): its container starts with the task
  definition's image and settings, the command and environment of ``overrides.containerOverrides``, and runs
  until it exits; the task then stops with the container's exit code (``EssentialContainerExited``), its output
  in CloudWatch Logs as a service task's. StopTask stops it (``UserInitiated``). A one-off task such as a
  release command (deploykit's ``release`` step) is run so.
- ``deleted_services_stop_their_tasks``: a deleted service's tasks drain and then their containers stop
  (they kept running until the sandbox stopped); ``target_group_gone``: a task whose target group was
  deleted first stops without draining instead of failing every reconcile.

The reconciler reads moto's services under the sandbox lock, works the Docker engine outside it, and
writes the results back under it.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from sandbox.server import PartStatus
from sandbox.settings import ACCOUNT_ID, TASK_LABEL, Settings

if TYPE_CHECKING:
    from sandbox.ext.alb import AlbExtension
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.ecs")

LABEL = TASK_LABEL  # its value: the state folder of the sandbox that started the container (Settings.task_owner)
RESTART_BACKOFF = 1.0  # seconds before a failed task is replaced
LOG_EVERY = 1.0  # seconds between two shipments of a running container's output to CloudWatch Logs
FAILED_VISIBLE = 10.0  # seconds a FAILED deployment stays listed after its rollback completed


def now() -> datetime:
    return datetime.now(UTC)


class TaskView(dict[str, Any]):
    """A task as DescribeTasks shows it; moto's list_tasks also reads a few attributes."""

    @property
    def task_arn(self) -> str:
        return str(self["taskArn"])

    @property
    def desired_status(self) -> str:
        return str(self["desiredStatus"])

    @property
    def started_by(self) -> str:
        return str(self.get("startedBy", ""))

    @property
    def task_definition_arn(self) -> str:
        return str(self["taskDefinitionArn"])

    @property
    def cluster_arn(self) -> str:
        return str(self["clusterArn"])

    @property
    def container_instance_arn(self) -> str:
        return ""


@dataclass
class RTask:
    arn: str
    cluster: str
    service: str
    task_definition: str
    deployment_id: str
    port: int
    container_name: str
    created_at: datetime = field(default_factory=now)
    container_id: str | None = None
    last_status: str = "PROVISIONING"
    desired_status: str = "RUNNING"
    health: str = "UNKNOWN"
    started_at: datetime | None = None
    healthy_since: float | None = None  # monotonic time the task became healthy (container + targets)
    stopping_at: datetime | None = None
    stopped_at: datetime | None = None
    stopped_reason: str = ""
    exit_code: int | None = None
    container_reason: str = ""
    registered: bool = False
    stop_after: float | None = None  # monotonic: stop the container then (after draining)
    failed: bool = False  # counted against the circuit breaker
    started_mono: float = field(default_factory=time.monotonic)
    # awslogs: where the container's output goes, and how far it has gone (the last line's time, in ns)
    log_group: str = ""
    log_stream: str = ""
    log_seen_ns: int = 0
    log_next: float = 0.0  # monotonic: the next shipment while the container runs
    # a task of its own (RunTask): its group, and the overrides of its container (command, environment)
    group: str = ""
    command: tuple[str, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.desired_status == "RUNNING"

    def view(self, cluster_arn: str) -> TaskView:
        container: dict[str, Any] = {
            "containerArn": f"{self.arn.replace(':task/', ':container/')}/{self.container_name}",
            "taskArn": self.arn,
            "name": self.container_name,
            "lastStatus": "RUNNING" if self.last_status in ("RUNNING", "DEACTIVATING") else self.last_status,
            "healthStatus": self.health,
            "networkBindings": [
                {"bindIP": "127.0.0.1", "containerPort": self.port, "hostPort": self.port, "protocol": "tcp"}
            ],
            "networkInterfaces": [{"attachmentId": "eni-attachment", "privateIpv4Address": "127.0.0.1"}],
        }
        if self.exit_code is not None:
            container["exitCode"] = self.exit_code
        if self.container_reason:
            container["reason"] = self.container_reason
        view = TaskView(
            taskArn=self.arn,
            clusterArn=cluster_arn,
            taskDefinitionArn=self.task_definition,
            lastStatus=self.last_status,
            desiredStatus=self.desired_status,
            healthStatus=self.health,
            launchType="FARGATE",
            startedBy=self.deployment_id,
            group=self.group or f"service:{self.service}",
            overrides=self.overrides or {"containerOverrides": []},
            createdAt=self.created_at,
            containers=[container],
            attachments=[
                {
                    "id": "eni-attachment",
                    "type": "ElasticNetworkInterface",
                    "status": "ATTACHED",
                    "details": [{"name": "privateIPv4Address", "value": "127.0.0.1"}],
                }
            ],
        )
        for key, value in (
            ("startedAt", self.started_at),
            ("stoppingAt", self.stopping_at),
            ("stoppedAt", self.stopped_at),
        ):
            if value is not None:
                view[key] = value
        if self.stopped_reason:
            view["stoppedReason"] = self.stopped_reason
            if self.exit_code is not None:
                view["stopCode"] = "EssentialContainerExited"
            elif self.stopped_reason.startswith("Task stopped by user"):
                view["stopCode"] = "UserInitiated"
            else:  # a start failure names its error in the container's reason; the scheduler's stops do not
                view["stopCode"] = "TaskFailedToStart" if self.container_reason else "ServiceSchedulerInitiated"
        return view


@dataclass
class RDeployment:
    id: str
    task_definition: str
    desired: int
    status: str = "PRIMARY"
    rollout_state: str = "IN_PROGRESS"
    rollout_reason: str = ""
    failed_tasks: int = 0
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)

    def render(self, tasks: list[RTask]) -> dict[str, Any]:
        mine = [t for t in tasks if t.deployment_id == self.id and t.live]
        running = sum(1 for t in mine if t.last_status == "RUNNING")
        return {
            "id": self.id,
            "status": self.status,
            "taskDefinition": self.task_definition,
            "desiredCount": self.desired,
            "pendingCount": sum(1 for t in mine if t.last_status in ("PROVISIONING", "PENDING")),
            "runningCount": running,
            "failedTasks": self.failed_tasks,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "launchType": "FARGATE",
            "rolloutState": self.rollout_state,
            "rolloutStateReason": self.rollout_reason or f"ECS deployment {self.id} {self.rollout_state.lower()}.",
        }


@dataclass
class RService:
    cluster: str
    name: str
    deployments: list[RDeployment]
    tasks: dict[str, RTask] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    seen_task_definition: str = ""
    seen_desired: int = 0
    seen_force: int = 0
    last_completed: str | None = None
    next_start: float = 0.0

    @property
    def primary(self) -> RDeployment:
        return self.deployments[0]

    def event(self, message: str) -> None:
        text = f"(service {self.name}) {message}"
        self.events.insert(0, {"id": str(uuid.uuid4()), "createdAt": now(), "message": text})
        del self.events[100:]


def _deployment_id() -> str:
    return f"ecs-svc/{uuid.uuid4().int % 10**19:019d}"


class EcsRuntime:
    name = "ecs"

    def __init__(self, settings: Settings, alb: AlbExtension) -> None:
        self.settings = settings
        self.alb = alb
        self.services: dict[tuple[str, str], RService] = {}
        self.stopped: dict[str, RTask] = {}  # stopped tasks stay visible for a while, as on ECS
        self.standalone: dict[str, RTask] = {}  # tasks of their own (RunTask) until they stop
        self._used_ports: set[int] = set()
        self._stop = threading.Event()
        self._log_lock = threading.Lock()  # one reader of a task's log at a time (the reconciler, a stopper)
        self._thread: threading.Thread | None = None
        self.sandbox: Sandbox | None = None

    # -- install ------------------------------------------------------------------------------------------
    def install(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        from moto.ecs.responses import EC2ContainerServiceResponse

        backend = sandbox.backend("ecs")
        runtime = self

        original_create = EC2ContainerServiceResponse.create_service
        original_update = EC2ContainerServiceResponse.update_service

        def keep_settings(response: Any, result: Any) -> Any:
            cluster = response._get_param("cluster", "default").rsplit("/", 1)[-1]
            name = (response._get_param("serviceName") or response._get_param("service") or "").rsplit("/", 1)[-1]
            service = response.ecs_backend.services.get(f"{cluster}:{name}")
            if service is not None:
                runtime.configure_service(
                    service,
                    deployment_configuration=response._get_param("deploymentConfiguration"),
                    grace=response._get_param("healthCheckGracePeriodSeconds"),
                    load_balancers=response._get_param("loadBalancers"),
                    force=bool(response._get_param("forceNewDeployment")),
                )
            return result

        def create_service(response: Any) -> Any:
            return keep_settings(response, original_create(response))

        def update_service(response: Any) -> Any:
            return keep_settings(response, original_update(response))

        EC2ContainerServiceResponse.create_service = create_service  # type: ignore[method-assign,assignment]
        EC2ContainerServiceResponse.update_service = update_service  # type: ignore[method-assign,assignment]

        original_list = backend.list_tasks
        original_describe = backend.describe_tasks

        def list_tasks(
            cluster_str: str | None = None,
            container_instance: str | None = None,
            family: str | None = None,
            started_by: str | None = None,
            service_name: str | None = None,
            desiredStatus: str | None = None,
        ) -> list[Any]:
            found = list(original_list(cluster_str, container_instance, family, started_by, None, desiredStatus))
            cluster = (cluster_str or "default").rsplit("/", 1)[-1]
            for task in runtime.all_tasks():
                if task.cluster != cluster:
                    continue
                if service_name and task.service != service_name.rsplit("/", 1)[-1]:
                    continue
                if desiredStatus and task.desired_status != desiredStatus:
                    continue
                if started_by and task.deployment_id != started_by:
                    continue
                if family and task.task_definition.rsplit("/", 1)[-1].split(":")[0] != family:
                    continue
                found.append(runtime.view(task))
            return found

        def describe_tasks(cluster_str: str, tasks: list[str]) -> list[Any]:
            wanted = {t.rsplit("/", 1)[-1] for t in tasks}
            ours = [runtime.view(t) for t in runtime.all_tasks() if t.arn.rsplit("/", 1)[-1] in wanted]
            try:
                theirs = list(original_describe(cluster_str, tasks))
            except Exception:
                if not ours:
                    raise
                theirs = []
            return theirs + ours

        original_stop = backend.stop_task

        def run_task(
            cluster_str: str,
            task_definition_str: str,
            count: int,
            overrides: dict[str, Any] | None,
            started_by: str | None,
            *args: Any,
            **kwargs: Any,
        ) -> list[Any]:
            cluster = backend._get_cluster(cluster_str or "default")  # raises ClusterNotFoundException
            definition = backend.describe_task_definition(task_definition_str)  # raises when not registered
            group = kwargs.get("group") or (args[3] if len(args) > 3 else None)
            return [
                runtime.view(runtime.run_standalone(cluster.name, definition, overrides or {}, started_by or "", group))
                for _ in range(max(1, int(count or 1)))
            ]

        def stop_task(cluster_str: str, task_str: str, reason: str) -> Any:
            task = runtime.standalone.get(task_str.rsplit("/", 1)[-1])
            if task is None:
                return original_stop(cluster_str, task_str, reason)
            runtime.stop_standalone(task, reason)
            return runtime.view(task)

        backend.list_tasks = list_tasks
        backend.describe_tasks = describe_tasks
        backend.run_task = run_task
        backend.stop_task = stop_task

    def configure_service(
        self,
        service: Any,
        *,
        deployment_configuration: dict[str, Any] | None = None,
        grace: int | None = None,
        load_balancers: list[dict[str, Any]] | None = None,
        force: bool = False,
    ) -> None:
        """Under the lock: keep what moto drops from a service created or updated through the ECS API or by
        CloudFormation (``settings_from_cloudformation``), and take it into the deployments now."""
        config = deployment_configuration
        if config is not None or not hasattr(service, "deployment_configuration"):
            service.deployment_configuration = _deployment_configuration(config)
        if grace is not None or not hasattr(service, "health_check_grace_period_seconds"):
            service.health_check_grace_period_seconds = int(grace or 0)
        if load_balancers is not None:
            service.load_balancers = load_balancers
        if force:
            service._sandbox_force = getattr(service, "_sandbox_force", 0) + 1
        self.sync(service)  # the new deployment is visible in this very answer, as on ECS

    def tasks_left(self, cluster: str, name: str) -> int:
        """Under the lock: the service's tasks whose containers have not stopped yet (deleted services too)."""
        return sum(
            1 for t in self.all_tasks() if t.cluster == cluster and t.service == name and t.last_status != "STOPPED"
        )

    def deployment_state(self, cluster: str, name: str) -> tuple[str, str, dict[str, str]] | None:
        """Under the lock: the PRIMARY deployment's task definition and rolloutState, and the task definitions
        of the FAILED deployments still listed (with their reasons); None while the runtime has not seen it."""
        rs = self.services.get((cluster, name))
        if rs is None:
            return None
        failed = {d.task_definition: d.rollout_reason for d in rs.deployments if d.rollout_state == "FAILED"}
        return rs.primary.task_definition, rs.primary.rollout_state, failed

    def all_tasks(self) -> list[RTask]:
        return (
            [t for s in self.services.values() for t in s.tasks.values()]
            + list(self.standalone.values())
            + list(self.stopped.values())
        )

    def run_standalone(
        self, cluster: str, definition: Any, overrides: dict[str, Any], started_by: str, group: str | None
    ) -> RTask:
        """Under the lock: a task of its own (RunTask), started at the next tick; its container gets the
        overrides' command and environment."""
        task_id = uuid.uuid4().hex
        arn = f"arn:aws:ecs:{self.settings.region}:{ACCOUNT_ID}:task/{cluster}/{task_id}"
        container = self._container_name(definition.arn)
        task = RTask(arn, cluster, "", definition.arn, started_by, 0, container)
        task.group = group or f"family:{definition.family}"
        task.overrides = {"containerOverrides": list(overrides.get("containerOverrides") or [])}
        for override in task.overrides["containerOverrides"]:
            if override.get("name") == container and override.get("command"):
                task.command = tuple(str(part) for part in override["command"])
        self.standalone[task_id] = task
        return task

    def stop_standalone(self, task: RTask, reason: str) -> None:
        """Under the lock: StopTask of a task of its own; its container stops at the next tick."""
        if task.live:
            task.desired_status = "STOPPED"
            task.stopped_reason = f"Task stopped by user: {reason}" if reason else "Task stopped by user"
            task.stopping_at = now()
            task.stop_after = time.monotonic()

    def view(self, task: RTask) -> TaskView:
        assert self.sandbox is not None
        cluster = self.sandbox.backend("ecs").clusters.get(task.cluster)
        return task.view(cluster.arn if cluster else task.cluster)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._remove_leftovers()
        self._thread = threading.Thread(target=self._loop, name="ecs-runtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Remove this sandbox's task containers, all at once (each removal of a running one waits for its kill)."""
        assert self.sandbox is not None
        found = self.sandbox.docker.containers.list(all=True, filters={"label": f"{LABEL}={self._owner}"})
        if found:
            with ThreadPoolExecutor(min(len(found), 8), thread_name_prefix="remove") as pool:
                list(pool.map(_remove, found))

    @property
    def _owner(self) -> str:
        return self.settings.task_owner

    def status(self) -> list[PartStatus]:
        assert self.sandbox is not None
        with self.sandbox.lock:
            running = sum(1 for t in self.all_tasks() if t.last_status == "RUNNING")
            services = len(self.services)
        return [
            PartStatus(
                "ecs runtime",
                "docker (host network)",
                self._thread is not None and self._thread.is_alive(),
                f"{services} service(s), {running} running task(s)",
            )
        ]

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.tick):
            try:
                self.reconcile()
            except Exception:
                log.exception("ECS reconcile failed")

    # -- the reconciler -----------------------------------------------------------------------------------
    def reconcile(self) -> None:
        assert self.sandbox is not None
        with self.sandbox.lock:
            work = self._plan() + self._plan_standalone()
        for action, task, extra in work:
            if action == "start":
                self._start_container(task, extra)
            elif action == "stop":
                self._stop_container(task)
        observed = {task.arn: self._observe(task) for _, svc in self._snapshot_services() for task in svc}
        with self.sandbox.lock:
            self._apply(observed)
            self._apply_standalone(observed)
            self._render()

    def _snapshot_services(self) -> list[tuple[RService | None, list[RTask]]]:
        assert self.sandbox is not None
        with self.sandbox.lock:
            tasks: list[tuple[RService | None, list[RTask]]] = [
                (s, [t for t in s.tasks.values() if t.container_id and t.last_status != "STOPPED"])
                for s in self.services.values()
            ]
            alone = [t for t in self.standalone.values() if t.container_id and t.last_status != "STOPPED"]
            return [*tasks, (None, alone)] if alone else tasks

    def sync(self, service: Any) -> None:
        """Under the lock: take a service's new settings into its deployments now, not at the next tick."""
        if service.status != "ACTIVE" or not service.task_definition:
            return
        key = (service.cluster_name, service.name)
        if key not in self.services:
            self.services[key] = self._new_service(service)
        self._follow(self.services[key], service)
        self._render()

    def _new_service(self, service: Any) -> RService:
        rs = RService(
            service.cluster_name,
            service.name,
            [RDeployment(_deployment_id(), service.task_definition, service.desired_count)],
        )
        rs.seen_task_definition, rs.seen_desired = service.task_definition, service.desired_count
        rs.seen_force = getattr(service, "_sandbox_force", 0)
        rs.event(f"has started a deployment of {_rev(service.task_definition)}.")
        return rs

    def _plan(self) -> list[tuple[str, RTask, Any]]:
        """Under the lock: follow moto's services, decide which containers to start and stop."""
        assert self.sandbox is not None
        backend = self.sandbox.backend("ecs")
        work: list[tuple[str, RTask, Any]] = []
        alive = set()
        for service in list(backend.services.values()):
            key = (service.cluster_name, service.name)
            if service.status != "ACTIVE" or not service.task_definition:
                continue
            alive.add(key)
            rs = self.services.get(key)
            if rs is None:
                rs = self.services[key] = self._new_service(service)
            self._follow(rs, service)
            work += self._schedule(rs, service)
        for key in list(self.services):
            if key not in alive:
                rs = self.services.pop(key)
                for task in rs.tasks.values():
                    if task.live:
                        work += self._begin_stop(rs, task, "Service deleted")
                    self.stopped[task.arn] = task
        return work

    def _plan_standalone(self) -> list[tuple[str, RTask, Any]]:
        """Under the lock: start the tasks of their own not started yet (a port each, as a service's task)."""
        work: list[tuple[str, RTask, Any]] = []
        for task in self.standalone.values():
            if task.live and task.container_id is None and task.last_status == "PROVISIONING" and not task.port:
                port = self._allocate_port()
                if port is None:
                    reason = "no free port left in [sandbox] task_ports"
                    self._mark_stopped(task, reason, None, "ResourceInitializationError")
                    continue
                task.port = port
                task.last_status = "PENDING"
                work.append(("start", task, self._container_spec(task.task_definition, task)))
        return work

    def _apply_standalone(self, observed: dict[str, dict[str, Any]]) -> None:
        """Under the lock: what Docker says of the tasks of their own; a stopped one joins the stopped tasks."""
        for task_id, task in list(self.standalone.items()):
            seen = observed.get(task.arn, {})
            self._ship(task, seen.get("log_events"))
            if task.last_status != "STOPPED":
                if task.stop_after is not None:  # StopTask
                    threading.Thread(target=self._stop_container, args=(task,), daemon=True).start()
                    self._mark_stopped(task, task.stopped_reason, None, "")
                elif seen.get("status") in ("exited", "dead", "gone"):
                    threading.Thread(target=self._stop_container, args=(task,), daemon=True).start()
                    self._mark_stopped(
                        task, "Essential container in task exited", seen.get("exit_code"), seen.get("error") or ""
                    )
                elif seen.get("status") == "running" and task.last_status == "PENDING":
                    task.last_status, task.started_at = "RUNNING", now()
            if task.last_status == "STOPPED":
                del self.standalone[task_id]
                self.stopped[task.arn] = task

    def _follow(self, rs: RService, service: Any) -> None:
        """Turn moto's service fields into deployments: new task definition, forced deployment, scaling."""
        force = getattr(service, "_sandbox_force", 0)
        if service.task_definition != rs.seen_task_definition or force != rs.seen_force:
            rs.seen_task_definition, rs.seen_force = service.task_definition, force
            if service.task_definition != rs.primary.task_definition or force:
                for d in rs.deployments:
                    d.status = "ACTIVE"
                rs.deployments.insert(0, RDeployment(_deployment_id(), service.task_definition, service.desired_count))
                rs.event(f"has started a deployment of {_rev(service.task_definition)} (deployment {rs.primary.id}).")
        if service.desired_count != rs.seen_desired:
            rs.seen_desired = service.desired_count
            rs.primary.desired = service.desired_count
            rs.primary.updated_at = now()
            if rs.primary.rollout_state == "COMPLETED":
                rs.primary.rollout_state = "IN_PROGRESS"

    def _schedule(self, rs: RService, service: Any) -> list[tuple[str, RTask, Any]]:
        work: list[tuple[str, RTask, Any]] = []
        config = getattr(service, "deployment_configuration", None) or _deployment_configuration(None)
        primary = rs.primary
        desired = primary.desired
        live = [t for t in rs.tasks.values() if t.live]
        mine = [t for t in live if t.deployment_id == primary.id]
        max_total = max(desired, math.floor(desired * config["maximumPercent"] / 100))
        min_healthy = math.ceil(desired * config["minimumHealthyPercent"] / 100)
        clock = time.monotonic()

        # circuit breaker
        breaker = config.get("deploymentCircuitBreaker", {})
        if (
            breaker.get("enable")
            and primary.rollout_state == "IN_PROGRESS"
            and primary.failed_tasks >= self.settings.circuit_breaker_threshold
        ):
            return work + self._trip(rs, service, bool(breaker.get("rollback")))

        # start new tasks of the PRIMARY, within maximumPercent
        need = desired - len(mine)
        room = max_total - len(live)
        if need > 0 and room > 0 and clock >= rs.next_start:
            for _ in range(min(need, room)):
                task = self._new_task(rs, primary)
                if task is None:
                    break
                work.append(("start", task, self._container_spec(primary.task_definition, task)))

        # scale in the PRIMARY beyond desired
        for task in sorted(mine, key=lambda t: t.healthy_since is not None)[: max(0, len(mine) - desired)]:
            work += self._begin_stop(rs, task, f"Scaling activity initiated by (deployment {primary.id})")

        # stop old tasks while at least minimumHealthyPercent stays healthy (unhealthy old ones first)
        healthy = [t for t in live if t.healthy_since is not None and t.stop_after is None]
        old = sorted(
            (t for t in live if t.deployment_id != primary.id and t.stop_after is None),
            key=lambda t: t.healthy_since is not None,
        )
        for task in old:
            if task in healthy:
                if len(healthy) - 1 < min_healthy:
                    continue
                healthy.remove(task)
            work += self._begin_stop(rs, task, f"Task stopped by deployment {primary.id}")

        # the deployment is done when the PRIMARY runs desired healthy tasks and nothing else runs
        new_healthy = sum(1 for t in mine if t.healthy_since is not None)
        # old tasks count until they have stopped (draining included), as on ECS
        others = [t for t in rs.tasks.values() if t.deployment_id != primary.id and t.last_status != "STOPPED"]
        if primary.rollout_state == "IN_PROGRESS" and new_healthy >= desired and len(mine) == desired and not others:
            primary.rollout_state, primary.rollout_reason = "COMPLETED", f"ECS deployment {primary.id} completed."
            primary.updated_at = now()
            rs.last_completed = primary.task_definition
            rs.event(f"(deployment {primary.id}) deployment completed.")
            rs.event("has reached a steady state.")

        # ACTIVE deployments go away once their last task has stopped; a FAILED one stays listed until
        # the rollback has completed and for FAILED_VISIBLE seconds, so that observers see why
        def keep(d: RDeployment) -> bool:
            if any(t.deployment_id == d.id and t.last_status != "STOPPED" for t in rs.tasks.values()):
                return True
            recent = (now() - d.updated_at).total_seconds() < FAILED_VISIBLE
            return d.rollout_state == "FAILED" and (rs.primary.rollout_state == "IN_PROGRESS" or recent)

        rs.deployments = [rs.primary] + [d for d in rs.deployments[1:] if keep(d)]
        return work

    def _trip(self, rs: RService, service: Any, rollback: bool) -> list[tuple[str, RTask, Any]]:
        failed = rs.primary
        failed.rollout_state = "FAILED"
        failed.rollout_reason = "ECS deployment circuit breaker: tasks failed to start."
        failed.updated_at = now()
        rs.event(f"(deployment {failed.id}) deployment failed: tasks failed to start.")
        work: list[tuple[str, RTask, Any]] = []
        if not rollback or rs.last_completed is None:
            return work
        previous = next((d for d in rs.deployments[1:] if d.task_definition == rs.last_completed), None)
        if previous is None:
            previous = RDeployment(_deployment_id(), rs.last_completed, failed.desired)
        else:
            rs.deployments.remove(previous)
        previous.status, previous.rollout_state, previous.rollout_reason = "PRIMARY", "IN_PROGRESS", ""
        previous.desired, previous.updated_at = failed.desired, now()
        failed.status = "ACTIVE"
        rs.deployments.insert(0, previous)
        rs.event(f"(deployment {failed.id}) rolling back to deployment {previous.id}.")
        service.task_definition = previous.task_definition
        rs.seen_task_definition = previous.task_definition
        for task in list(rs.tasks.values()):
            if task.deployment_id == failed.id and task.live:
                work += self._begin_stop(rs, task, f"Task stopped by circuit breaker rollback of {failed.id}")
        return work

    def _new_task(self, rs: RService, deployment: RDeployment) -> RTask | None:
        port = self._allocate_port()
        if port is None:
            log.error("no free port left in %s", self.settings.task_ports)
            return None
        task_id = uuid.uuid4().hex
        arn = f"arn:aws:ecs:{self.settings.region}:{ACCOUNT_ID}:task/{rs.cluster}/{task_id}"
        container = self._container_name(deployment.task_definition)
        task = RTask(arn, rs.cluster, rs.name, deployment.task_definition, deployment.id, port, container)
        rs.tasks[arn] = task
        return task

    def _allocate_port(self) -> int | None:
        first, last = self.settings.task_ports
        for port in range(first, last + 1):
            if port not in self._used_ports and _port_is_free(port):
                self._used_ports.add(port)
                return port
        return None

    def _container_name(self, task_definition: str) -> str:
        assert self.sandbox is not None
        td = self.sandbox.backend("ecs").describe_task_definition(task_definition)
        essential = [c for c in td.container_definitions if c.get("essential", True)]
        return str((essential or td.container_definitions)[0]["name"])

    def _container_spec(self, task_definition: str, task: RTask) -> dict[str, Any]:
        """How to run the task's container (read under the lock, used outside it)."""
        assert self.sandbox is not None
        td = self.sandbox.backend("ecs").describe_task_definition(task_definition)
        definition = next(c for c in td.container_definitions if c["name"] == task.container_name)
        environment = {e["name"]: e["value"] for e in definition.get("environment", [])}
        secrets, failed = resolve_secrets(
            definition.get("secrets") or [], self.sandbox.backend("ssm"), self.sandbox.backend("secretsmanager")
        )
        environment.update(secrets)
        environment.update(
            PORT=str(task.port),
            HOST="127.0.0.1",
            AWS_ENDPOINT_URL=self.settings.endpoint_url,
            AWS_REGION=self.settings.region,
            AWS_DEFAULT_REGION=self.settings.region,
            AWS_ACCESS_KEY_ID="sandbox",
            AWS_SECRET_ACCESS_KEY="sandbox",
            ECS_CONTAINER_METADATA_URI_V4="",
        )
        environment.update(_task_environment(self.settings.task_environment, environment, self.settings))
        for override in task.overrides.get("containerOverrides", []):
            if override.get("name") == task.container_name:
                environment.update({e["name"]: e["value"] for e in override.get("environment") or []})
        spec: dict[str, Any] = {"image": definition["image"], "environment": environment}
        if task.command is not None:
            spec["command"] = list(task.command)
        check = definition.get("healthCheck")
        if check and check.get("command"):
            ports = [int(m["containerPort"]) for m in definition.get("portMappings", []) if m.get("containerPort")]
            check = {**check, "command": _on_task_port(list(check["command"]), ports, task.port)}
            ns = 1_000_000_000
            spec["healthcheck"] = {
                "test": check["command"],
                "interval": int(check.get("interval", 30)) * ns,
                "timeout": int(check.get("timeout", 5)) * ns,
                "retries": int(check.get("retries", 3)),
                "start_period": int(check.get("startPeriod", 0)) * ns,
            }
        else:
            # ECS runs only the health check of the task definition, never the image's HEALTHCHECK
            spec["healthcheck"] = {"test": ["NONE"]}
        spec["error"] = failed or self._awslogs(definition, task)
        return spec

    def _awslogs(self, definition: dict[str, Any], task: RTask) -> str:
        """Under the lock: point the task at its CloudWatch Logs stream when its container logs with awslogs;
        the reason it cannot start (its log group does not exist), or ''."""
        assert self.sandbox is not None
        config = definition.get("logConfiguration") or {}
        options = config.get("options") or {}
        group = str(options.get("awslogs-group") or "")
        if config.get("logDriver") != "awslogs" or not group:
            return ""
        logs = self.sandbox.backend("logs")
        if group not in logs.groups:
            if str(options.get("awslogs-create-group", "")).lower() != "true":
                return (
                    "ResourceInitializationError: failed to validate logger args: the specified log group "
                    f"{group} does not exist: ResourceNotFoundException"
                )
            logs.ensure_log_group(group)
        prefix = str(options.get("awslogs-stream-prefix") or "")
        task_id = task.arn.rsplit("/", 1)[-1]
        task.log_group = group
        task.log_stream = f"{prefix}/{task.container_name}/{task_id}" if prefix else task_id
        logs.create_log_stream(group, task.log_stream)
        return ""

    def _begin_stop(self, rs: RService, task: RTask, reason: str) -> list[tuple[str, RTask, Any]]:
        """Deregister the task's targets and stop it after the longest deregistration delay."""
        assert self.sandbox is not None
        if not task.live:
            return []
        task.desired_status = "STOPPED"
        task.stopped_reason = task.stopped_reason or reason
        task.stopping_at = now()
        delay = self._deregister(rs, task)
        if task.last_status == "RUNNING":
            task.last_status = "DEACTIVATING" if delay else "STOPPING"
        task.stop_after = time.monotonic() + delay
        return []

    def _deregister(self, rs: RService, task: RTask) -> float:
        """Deregister the task's targets, when it has any: the longest deregistration delay (0 without)."""
        delay = 0.0
        if task.registered:
            for lb in self._load_balancers(rs):
                try:
                    delay = max(delay, self.alb.deregister(lb["targetGroupArn"], "127.0.0.1", task.port))
                except Exception:  # target_group_gone: nothing left to drain from
                    log.info("target group %s is gone; %s stops without draining", lb["targetGroupArn"], task.arn)
            rs.event("has begun draining connections on 1 tasks.")
        return delay

    def _load_balancers(self, rs: RService) -> list[dict[str, Any]]:
        assert self.sandbox is not None
        service = self.sandbox.backend("ecs").services.get(f"{rs.cluster}:{rs.name}")
        return [lb for lb in (service.load_balancers if service else []) if lb.get("targetGroupArn")]

    # -- Docker (outside the lock) --------------------------------------------------------------------------
    def _start_container(self, task: RTask, spec: dict[str, Any]) -> None:
        assert self.sandbox is not None
        client = self.sandbox.docker
        if spec.get("error"):
            self._failed_to_start(task, spec["error"], "ResourceInitializationError")
            return
        try:
            try:
                client.images.get(spec["image"])
            except docker.errors.ImageNotFound:
                client.images.pull(spec["image"], auth_config=self._pull_auth(spec["image"]))
            container = client.containers.run(
                spec["image"],
                spec.get("command"),
                detach=True,
                network_mode="host",
                environment=spec["environment"],
                healthcheck=spec.get("healthcheck"),
                name=f"sandbox-{task.service or 'run'}-{task.arn[-12:]}",
                labels={LABEL: self._owner, "io.deploykit.task-arn": task.arn},
                # its environment is the task definition's, as on Fargate: not the proxies of ~/.docker/config.json,
                # which sent its calls to the sandbox on this machine (AWS, the JWKS) through that proxy
                use_config_proxy=False,
            )
        except docker.errors.DockerException as exc:
            text = str(getattr(exc, "explanation", None) or exc)
            code = (
                "CannotPullContainerError"
                if "pull" in text.lower() or "not found" in text.lower()
                else "CannotStartContainerError"
            )
            self._failed_to_start(task, f"{code}: {text}", code)
            return
        with self.sandbox.lock:
            task.container_id = container.id
            if task.live:
                task.last_status = "PENDING"
                return
        self._stop_container(task)  # stopped while it was starting

    def _pull_auth(self, image: str) -> dict[str, str] | None:
        """What ECS pulls with, as the task execution role does from ECR: the registry front's credentials, for an
        image there (one copied into a repository by the registry's API, never on this engine, is pulled)."""
        if not image.startswith(self.settings.registry_host + "/"):
            return None
        try:
            password = (self.settings.state_dir / "registry-password").read_text().strip()
        except OSError:
            return None
        return {"username": "AWS", "password": password}

    def _failed_to_start(self, task: RTask, reason: str, code: str) -> None:
        assert self.sandbox is not None
        with self.sandbox.lock:
            self._mark_stopped(task, reason[:255], None, code)
            rs = self.services.get((task.cluster, task.service))
            if rs is not None:
                self._count_failure(rs, task, f"failed to start: {reason}"[:300])

    def _observe(self, task: RTask) -> dict[str, Any]:
        assert self.sandbox is not None
        try:
            container = self.sandbox.docker.containers.get(task.container_id)
        except docker.errors.NotFound:
            return {"status": "gone"}
        except docker.errors.APIError:
            return {}
        state = container.attrs.get("State", {})
        seen = {
            "status": state.get("Status"),
            "exit_code": state.get("ExitCode"),
            "health": (state.get("Health") or {}).get("Status"),
            "error": state.get("Error", ""),
        }
        if task.log_stream and (seen["status"] != "running" or time.monotonic() >= task.log_next):
            seen["log_events"] = self._read_log(container, task)
        return seen

    def _read_log(self, container: Any, task: RTask) -> list[dict[str, Any]]:
        """awslogs: the lines the container wrote since the last shipment, as CloudWatch Logs events."""
        with self._log_lock:
            task.log_next = time.monotonic() + LOG_EVERY
            try:  # whole seconds: the lines of that second already shipped are skipped by their time
                since = task.log_seen_ns // 1_000_000_000 or None
                raw = container.logs(stdout=True, stderr=True, timestamps=True, since=since)
            except docker.errors.APIError:
                return []
            events = []
            for line in raw.decode("utf-8", "replace").splitlines():
                stamp, _, message = line.partition(" ")
                ns = _rfc3339_ns(stamp)
                if ns is None or ns <= task.log_seen_ns:
                    continue
                task.log_seen_ns = ns
                if message.strip():  # the driver sends no empty events; CloudWatch Logs refuses them
                    events.append({"timestamp": ns // 1_000_000, "message": message})
            return events

    def _ship(self, task: RTask, events: list[dict[str, Any]] | None) -> None:
        """Under the lock: file a task's log events in its CloudWatch Logs stream."""
        assert self.sandbox is not None
        if not events:
            return
        try:
            self.sandbox.backend("logs").put_log_events(task.log_group, task.log_stream, events)
        except Exception:  # the group or stream was deleted meanwhile: the driver loses these lines too
            log.info("could not file %d log line(s) of %s in %s", len(events), task.arn, task.log_group)

    def _stop_container(self, task: RTask) -> None:
        assert self.sandbox is not None
        if not task.container_id:
            return
        try:
            container = self.sandbox.docker.containers.get(task.container_id)
            container.stop(timeout=5)
            if task.log_stream:  # what it wrote last, its shutdown included
                events = self._read_log(container, task)
                with self.sandbox.lock:
                    self._ship(task, events)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("stopping %s: %s", task.arn, exc)

    # -- apply what Docker and the ALB say (under the lock) ---------------------------------------------------
    def _apply(self, observed: dict[str, dict[str, Any]]) -> None:
        clock = time.monotonic()
        for rs in self.services.values():
            grace = self._grace(rs)
            for task in list(rs.tasks.values()):
                seen = observed.get(task.arn, {})
                self._ship(task, seen.get("log_events"))
                stop_due = task.stop_after is not None and (clock >= task.stop_after or self._drained(rs, task))
                if stop_due and task.last_status != "STOPPED":
                    threading.Thread(target=self._stop_container, args=(task,), daemon=True).start()
                    self._mark_stopped(task, task.stopped_reason, task.exit_code, task.container_reason)
                    continue
                if not seen or task.last_status == "STOPPED":
                    continue
                if seen.get("status") in ("exited", "dead", "gone"):
                    was_live = task.live
                    self._deregister(rs, task)  # as ECS does for a task that stopped: its port may serve another
                    self._mark_stopped(
                        task, "Essential container in task exited", seen.get("exit_code"), seen.get("error") or ""
                    )
                    if was_live:
                        self._count_failure(
                            rs, task, f"stopped: essential container exited with code {seen.get('exit_code')}"
                        )
                    continue
                started = seen.get("status") == "running" and task.last_status in ("PROVISIONING", "PENDING")
                if started:
                    task.last_status, task.started_at = "RUNNING", now()
                health = seen.get("health")
                task.health = {"healthy": "HEALTHY", "unhealthy": "UNHEALTHY"}.get(health or "", "UNKNOWN")
                # ECS registers a task's targets once its agent has reported the container started, never in the
                # same instant: here one pass (a tick) later, not milliseconds after the process was started
                if not task.live or task.last_status != "RUNNING" or started:
                    continue
                if health == "unhealthy":
                    self._fail_live_task(rs, task, "Task failed container health checks")
                    continue
                self._register(rs, task)
                if health in (None, "healthy") and self._targets_healthy(rs, task):
                    task.healthy_since = task.healthy_since or clock
                elif clock - task.started_mono > grace and self._targets_unhealthy(rs, task):
                    group = self._load_balancers(rs)[0]["targetGroupArn"]
                    self._fail_live_task(rs, task, f"Task failed ELB health checks in (target-group {group})")
            for task in [t for t in rs.tasks.values() if t.last_status == "STOPPED"]:
                del rs.tasks[task.arn]
                self.stopped[task.arn] = task
        # deleted_services_stop_their_tasks: a deleted service's tasks drain, then their containers stop
        for task in self.stopped.values():
            if task.stop_after is not None and clock >= task.stop_after and task.last_status != "STOPPED":
                threading.Thread(target=self._stop_container, args=(task,), daemon=True).start()
                self._mark_stopped(task, task.stopped_reason, task.exit_code, task.container_reason)
        # stopped tasks stay listed for a while (ECS keeps them about an hour; the sandbox ten minutes)
        for arn, task in list(self.stopped.items()):
            if task.stopped_at and (now() - task.stopped_at).total_seconds() > 600:
                del self.stopped[arn]

    def _grace(self, rs: RService) -> float:
        assert self.sandbox is not None
        service = self.sandbox.backend("ecs").services.get(f"{rs.cluster}:{rs.name}")
        return float(getattr(service, "health_check_grace_period_seconds", 0) or 0)

    def _fail_live_task(self, rs: RService, task: RTask, reason: str) -> None:
        self._begin_stop(rs, task, reason)
        self._count_failure(rs, task, f"stopped: {reason}")

    def _count_failure(self, rs: RService, task: RTask, message: str) -> None:
        """A new task failed: it counts against its deployment's circuit breaker."""
        task.failed = True
        deployment = next((d for d in rs.deployments if d.id == task.deployment_id), None)
        if deployment is not None and deployment.rollout_state == "IN_PROGRESS":
            deployment.failed_tasks += 1
        rs.next_start = time.monotonic() + RESTART_BACKOFF
        rs.event(f"(task {task.arn.rsplit('/', 1)[-1]}) {message}.")

    def _mark_stopped(self, task: RTask, reason: str, exit_code: int | None, container_reason: str) -> None:
        task.last_status, task.desired_status = "STOPPED", "STOPPED"
        task.stopped_at = now()
        task.stopped_reason = task.stopped_reason or reason
        if exit_code is not None:
            task.exit_code = exit_code
        task.container_reason = task.container_reason or container_reason
        self._used_ports.discard(task.port)

    def _register(self, rs: RService, task: RTask) -> None:
        if task.registered:
            return
        for lb in self._load_balancers(rs):
            self.alb.register(lb["targetGroupArn"], "127.0.0.1", task.port)
        task.registered = True
        if self._load_balancers(rs):
            rs.event(f"registered 1 targets in (target-group {self._load_balancers(rs)[0]['targetGroupArn']})")

    def _targets_healthy(self, rs: RService, task: RTask) -> bool:
        for lb in self._load_balancers(rs):
            target = self.alb.health(lb["targetGroupArn"], "127.0.0.1", task.port)
            if target is None or target.state != "healthy":
                return False
        return True

    def _drained(self, rs: RService, task: RTask) -> bool:
        """Every target of the task has finished deregistering (ECS stops a task then, not at a fixed time)."""
        return all(
            (t := self.alb.health(lb["targetGroupArn"], "127.0.0.1", task.port)) is None or t.drained
            for lb in self._load_balancers(rs)
        )

    def _targets_unhealthy(self, rs: RService, task: RTask) -> bool:
        return any(
            (t := self.alb.health(lb["targetGroupArn"], "127.0.0.1", task.port)) is not None and t.state == "unhealthy"
            for lb in self._load_balancers(rs)
        )

    def _render(self) -> None:
        """Write deployments, counts and events into moto's service objects."""
        assert self.sandbox is not None
        backend = self.sandbox.backend("ecs")
        for (cluster, name), rs in self.services.items():
            service = backend.services.get(f"{cluster}:{name}")
            if service is None:
                continue
            tasks = list(rs.tasks.values())
            service.deployments = [d.render(tasks) for d in rs.deployments]
            service.running_count = sum(1 for t in tasks if t.last_status == "RUNNING")
            service.pending_count = sum(1 for t in tasks if t.live and t.last_status in ("PROVISIONING", "PENDING"))
            service.events = list(rs.events)


def _port_is_free(port: int) -> bool:
    """Whether nothing else on this machine listens on 127.0.0.1:port (another program, a stray container)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _deployment_configuration(config: dict[str, Any] | None) -> dict[str, Any]:
    """ECS's defaults for what the caller left out."""
    config = dict(config or {})
    config.setdefault("maximumPercent", 200)
    config.setdefault("minimumHealthyPercent", 100)
    config.setdefault("deploymentCircuitBreaker", {"enable": False, "rollback": False})
    return config


def _on_task_port(command: list[str], container_ports: list[int], task_port: int) -> list[str]:
    """health_check_on_the_task_port: loopback addresses of the container ports, in a health check command,
    moved to the task's own port."""
    out = []
    for part in command:
        for port in container_ports:
            for host in ("127.0.0.1", "localhost"):
                part = part.replace(f"{host}:{port}", f"{host}:{task_port}")
        out.append(part)
    return out


def _rfc3339_ns(stamp: str) -> int | None:
    """Docker's log timestamp (``2026-11-29T05:50:00.123456789Z``) in nanoseconds since the epoch."""
    try:
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
    except ValueError:
        return None


def _rev(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


SECRETS_FAILED = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed"
)


def resolve_secrets(secrets: list[dict[str, Any]], ssm: Any, secretsmanager: Any) -> tuple[dict[str, str], str]:
    """The environment a container's ``secrets`` give it (each ``name`` → the value its ``valueFrom`` names: an SSM
    parameter by name or ARN, decrypted; else a Secrets Manager secret by ARN, with an optional JSON key, version
    stage and version id after it), fetched from moto's ``ssm`` and ``secretsmanager`` backends as ECS's agent
    fetches them before the container starts; and why the task fails to start when one cannot be fetched (ECS's
    ResourceInitializationError), else ""."""
    found: dict[str, str] = {}
    for secret in secrets:
        name, value_from = str(secret.get("name", "")), str(secret.get("valueFrom", ""))
        parts = value_from.split(":")
        if value_from.startswith("arn:") and len(parts) > 6 and parts[2] == "secretsmanager":
            arn = ":".join(parts[:7])
            key, stage, version = [*parts[7:], "", "", ""][:3]
            try:
                answer = secretsmanager.get_secret_value(arn, version or None, stage or None)
                text = str(answer.get("SecretString", ""))
                found[name] = str(json.loads(text)[key]) if key else text
            except Exception as exc:  # not there, deleted, not JSON, no such key: the task does not start
                why = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                return {}, (
                    f"{SECRETS_FAILED}: unable to retrieve secret from asm: failed to fetch secret {value_from} from "
                    f"secrets manager: {why}"
                )
            continue
        parameter = ssm.get_parameter(value_from)
        if parameter is None:
            return {}, f"{SECRETS_FAILED}: unable to retrieve secrets from ssm: invalid parameters: {value_from}"
        found[name] = str(parameter.decrypt(parameter.value) or "")
    return found, ""


def _task_environment(templates: dict[str, str], environment: dict[str, str], settings: Settings) -> dict[str, str]:
    """The [sandbox] task_environment a task gets: each template formatted with the task's own variables,
    {endpoint_url} and {region}; skipped when the task sets that variable or lacks one the template names."""
    context = {**environment, "endpoint_url": settings.endpoint_url, "region": settings.region}
    extra: dict[str, str] = {}
    for name, template in templates.items():
        if name in environment:
            continue
        try:
            extra[name] = template.format_map(context)
        except (KeyError, ValueError, IndexError):
            continue
    return extra


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.APIError:
        log.warning("could not remove container %s", container.short_id)
