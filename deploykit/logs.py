"""``inv logs``: what the app's containers and the Lambda functions wrote, read from CloudWatch Logs.

Where a component logs is read from the environment, never configured twice: the app's from the awslogs settings
of the container in the task definition its service runs (group, and streams ``<prefix>/<container>/<task id>``),
a function's from its LoggingConfig (``/aws/lambda/<function name>`` when it has none). The lines are read with
FilterLogEvents over a time window (every page; the newest ``limit`` kept), or followed (:class:`Tail`, one source;
:class:`Followed`, several): each read from the newest line seen, each event shown once. Nothing here makes a
client.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import ecs
from deploykit.clock import moment_of
from deploykit.config import EnvConfig
from deploykit.errors import ServiceBeingDeleted, UsageError

LATE_MS = 10_000  # how much later than a newer one a line may reach CloudWatch Logs and still be followed
PAGES = 1000  # FilterLogEvents pages read for one window at most (each up to 10,000 events or 1 MB)
_VERSION = re.compile(r"\[(\$LATEST|\d+)\]")  # a Lambda stream: 2026/11/29/[3]<instance>


@dataclass(frozen=True)
class LogSource:
    """Where one component's lines are: a log group, and the prefix of its streams ('' for all of them); with
    ``pattern``, only the lines that match it (a CloudWatch Logs filter pattern, which CloudWatch Logs applies)."""

    component: str  # "app" or "lambda:<fn>"
    group: str
    stream_prefix: str = ""
    pattern: str = ""
    # the app's, once ECS deleted its service: what to say before its lines (they are the last it wrote)
    deleted: str = field(default="", compare=False)

    def label(self, stream: str) -> str:
        """Who wrote a line, short: the task (first 8 of its id) for the app, the version for a function."""
        if self.component == "app":
            return stream.rsplit("/", 1)[-1][:8]
        found = _VERSION.search(stream)
        return f"[{found.group(1)}]" if found else stream[-8:]


@dataclass(frozen=True)
class LogLine:
    timestamp: int  # ms since the epoch, as the writer stamped it
    stream: str
    message: str
    event_id: str

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    def render(self, source: LogSource, *, named: bool = False) -> str:
        """``HH:MM:SS.mmm  <who>  <message>``; ``named``: who is the component, then the task or version. A message of
        several lines (a traceback in one event) has each further line under the first, the time and writer left blank
        (a line of its own would read as another event without them)."""
        who = f"{source.component} {source.label(self.stream)}" if named else f"{source.label(self.stream):<8}"
        head = f"{self.time:%H:%M:%S}.{self.timestamp % 1000:03d}  {who}  "
        first, *more = self.message.rstrip("\n").split("\n")
        return "\n".join([head + first, *(" " * len(head) + line for line in more)])

    def to_json(self, source: LogSource) -> dict[str, Any]:
        stamp = self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"time": stamp, "stream": self.stream, "source": source.label(self.stream), "message": self.message}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``) or an ISO 8601 time (UTC unless it
    names its zone); UsageError otherwise."""
    when = moment_of(text, now, ahead=False)
    if when is None:
        raise UsageError(
            f"--since {text!r} is neither a duration nor a time (since 1970, as AWS counts)",
            next_step="pass a duration back from now (30s, 10m, 2h, 1d) or an ISO time (2026-11-29T06:00:00Z)",
        )
    if when > now:
        raise UsageError(
            f"--since {text} is to come: nothing was written since then",
            next_step=f"pass a time before now ({now:%Y-%m-%dT%H:%M:%SZ}), or a duration back from now (10m, 2h)",
        )
    return when


class NoLogGroup(UsageError):
    """A source's log group does not exist: the stack that makes it is not deployed, or (a function's group, made at
    its first run) nothing wrote to it yet."""


class BadFilterPattern(UsageError):
    """CloudWatch Logs refuses a source's filter pattern: bad input, never a read to try again."""


# -- where each component logs ------------------------------------------------------------------------------------


def app_source(ecs_client: Any, env: EnvConfig, task: str = "", *, logs: Any = None) -> LogSource:
    """The app's lines: the awslogs settings of ``env.container`` in the task definition the service runs now;
    ``task`` (an id, or its first characters) narrows them to one task's stream. A service ECS deleted (INACTIVE,
    which ECS lists a while longer) is refused (ServiceBeingDeleted), unless ``logs`` (a CloudWatch Logs client) is
    given: then it is :func:`deleted_app_source`."""
    service = ecs.describe_service(ecs_client, env.cluster, env.service, env, deleted=logs is not None)
    if service.get("status") == "INACTIVE":
        return deleted_app_source(ecs_client, logs, env, service, task)
    arn = str(service["taskDefinition"])
    return _app_source(ecs.TaskDefinitions(ecs_client).get(arn), arn, env, task)


def deleted_app_source(
    ecs_client: Any, logs: Any, env: EnvConfig, service: Mapping[str, Any], task: str = ""
) -> LogSource:
    """The lines the tasks of ``service``, which ECS deleted (INACTIVE), left: where the revision it ran last sent
    them, when that revision can still be read (a deregistered one can), logs with awslogs, and its group still holds
    the container's streams (a service deleted by hand; ``inv destroy`` deletes the group with the stack, and its
    retention the streams). The source says it was deleted (``deleted``). ServiceBeingDeleted (exit 2) with why,
    when nothing is left to read."""
    arn = str(service.get("taskDefinition") or "")

    def nothing(why: str) -> ServiceBeingDeleted:
        return ecs.being_deleted(
            env.service, env.cluster, env, "INACTIVE", so=f"none of its logs is left to read ({why})"
        )

    if not arn:
        raise nothing("ECS does not say which revision it ran")
    try:
        definition = ecs.TaskDefinitions(ecs_client).get(arn)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ClientException":  # how ECS says "no such task definition"
            raise
        raise nothing(f"its last revision {ecs.revision_name(arn)} cannot be read: {exc}") from None
    ecs.container_image(definition, env.container)  # refuses a container the task definition does not have
    if ecs.awslogs(definition, env.container) is None:
        raise nothing(_not_awslogs(definition, arn, env.container))
    whole = _app_source(definition, arn, env, "")  # every task's streams
    try:
        answer = logs.describe_log_streams(logGroupName=whole.group, logStreamNamePrefix=whole.stream_prefix, limit=1)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        raise nothing(f"log group {whole.group} is gone (inv destroy deletes it with the stack)") from None
    if not answer.get("logStreams"):
        raise nothing(f"log group {whole.group} holds no stream of {env.container}")
    return replace(
        _app_source(definition, arn, env, task),
        deleted=f"ECS deleted service {env.service} (INACTIVE; it lists it a while longer): its tasks write no more; "
        f"these are the lines they left, where its last revision {ecs.revision_name(arn)} sent them (the Fargate "
        f"stack makes it again: inv deploy.stack {env.stacks.fargate} --env {env.name})",
    )


def _not_awslogs(definition: dict[str, Any], arn: str, container: str) -> str:
    driver = ecs.log_configuration(definition, container).get("logDriver") or "none"
    return f"container {container!r} of {ecs.revision_name(arn)} does not log to CloudWatch Logs (log driver: {driver})"


def _app_source(definition: dict[str, Any], arn: str, env: EnvConfig, task: str) -> LogSource:
    """Where ``env.container`` of task definition ``arn`` logs, ``task`` narrowing it to one task's stream."""
    ecs.container_image(definition, env.container)  # refuses a container the task definition does not have
    found = ecs.awslogs(definition, env.container)
    if found is None:
        raise UsageError(
            _not_awslogs(definition, arn, env.container),
            next_step="give it the awslogs log driver in the Fargate stack (cdk/stacks/fargate_stack.py)",
        )
    group, prefix = found
    if not prefix:  # the streams are named by container ids then: only the whole group can be read
        if task:
            raise UsageError(
                f"--task needs streams named by task: container {env.container!r} logs without awslogs-stream-prefix",
                next_step="leave out --task, or set a stream prefix in the Fargate stack",
            )
        return LogSource("app", group)
    return LogSource("app", group, f"{prefix}/{env.container}/{task.strip()}")


def lambda_source(lambda_client: Any, function: str, function_name: str) -> LogSource:
    """A function's lines: the group of its LoggingConfig, else ``/aws/lambda/<function name>``."""
    answer = lambda_client.get_function_configuration(FunctionName=function_name)
    group = str((answer.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{function_name}")
    return LogSource(f"lambda:{function}", group)


# -- reading ------------------------------------------------------------------------------------------------------


def has_streams(logs: Any, source: LogSource) -> bool:
    """Whether any stream of ``source`` (its prefix: one task's) is in its group, whenever it wrote (one
    ``DescribeLogStreams``); a group that does not exist has none."""
    try:
        answer = logs.describe_log_streams(logGroupName=source.group, logStreamNamePrefix=source.stream_prefix, limit=1)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return bool(answer.get("logStreams"))


def version_lines(logs: Any, source: LogSource, version: str, start: datetime, *, limit: int) -> list[LogLine]:
    """The newest ``limit`` lines one version of a function wrote since ``start`` (its streams are named
    ``<date>/[<version>]<instance>``), oldest first."""
    wanted = f"[{version}]"
    lines = [
        line for line in read(logs, source, start, limit=max(limit * 20, 500)) if source.label(line.stream) == wanted
    ]
    return lines[-limit:]


def _lines(events: Iterable[Mapping[str, Any]]) -> list[LogLine]:
    return [
        LogLine(
            int(e.get("timestamp", 0)),
            str(e.get("logStreamName", "")),
            str(e.get("message", "")).rstrip("\n"),
            str(e.get("eventId", "")),
        )
        for e in events
    ]


def _filter(logs: Any, source: LogSource, start_ms: int, end_ms: int | None) -> Iterable[list[LogLine]]:
    """FilterLogEvents page by page over [start, end]; a group that does not exist is a UsageError."""
    kwargs: dict[str, Any] = {"logGroupName": source.group, "startTime": start_ms}
    if end_ms is not None:
        kwargs["endTime"] = end_ms
    if source.stream_prefix:
        kwargs["logStreamNamePrefix"] = source.stream_prefix
    if source.pattern:
        kwargs["filterPattern"] = source.pattern
    token = None
    for _ in range(PAGES):
        try:
            page = logs.filter_log_events(**kwargs, **({"nextToken": token} if token else {}))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise NoLogGroup(
                    f"log group {source.group} of {source.component} does not exist",
                    next_step="deploy the stack that creates it (inv deploy.auto), or check the log settings",
                ) from None
            if source.pattern and exc.response["Error"]["Code"] == "InvalidParameterException":
                why = exc.response["Error"].get("Message")
                raise BadFilterPattern(
                    f"--filter {source.pattern!r} is refused by CloudWatch Logs: {why}",
                    next_step="use a filter pattern: a term (ERROR), terms that must all be there (ERROR cars), a "
                    'phrase in double quotes ("GET /cars"), ?A ?B for either, A -B for A without B',
                ) from None
            raise
        # the prefix again here: not every CloudWatch Logs applies it (moto, so the sandbox, does not)
        yield [line for line in _lines(page.get("events", [])) if line.stream.startswith(source.stream_prefix)]
        token = page.get("nextToken")
        if not token:
            return
    # pages come oldest first: stopping here would show old lines as the newest
    raise UsageError(
        f"{source.group} has more than {PAGES} pages of lines in the window asked for",
        next_step="narrow it: a shorter --since (or --task for one of the app's tasks)",
    )


def read(logs: Any, source: LogSource, start: datetime, *, limit: int, end: datetime | None = None) -> list[LogLine]:
    """The newest ``limit`` lines written from ``start`` (to ``end``), oldest first."""
    end_ms = int(end.timestamp() * 1000) if end else None
    return _window(logs, source, int(start.timestamp() * 1000), end_ms, limit)[0]


def _window(
    logs: Any, source: LogSource, start_ms: int, end_ms: int | None, limit: int
) -> tuple[list[LogLine], dict[str, int]]:
    """The newest ``limit`` lines from ``start_ms``, oldest first (ties in the order CloudWatch Logs gave them), and
    every line read within ``LATE_MS`` of the newest (event id → time), shown or not."""
    kept: list[tuple[int, int, LogLine]] = []  # a heap of the newest: (time, order read, line)
    recent: dict[str, int] = {}
    newest = start_ms
    order = itertools.count()
    for page in _filter(logs, source, start_ms, end_ms):  # not in time order across streams (moto: by stream)
        for line in page:
            entry = (line.timestamp, next(order), line)
            if len(kept) < limit:
                heapq.heappush(kept, entry)
            elif entry[:2] > kept[0][:2]:
                heapq.heapreplace(kept, entry)
            recent[line.event_id] = line.timestamp
            newest = max(newest, line.timestamp)
        recent = {i: t for i, t in recent.items() if t >= newest - LATE_MS}
    return [line for _, _, line in sorted(kept, key=lambda entry: entry[:2])], recent


class Tail:
    """The lines of ``source`` that arrive from ``start`` on, each once: :meth:`first` the newest ``limit`` of those
    there already, then each :meth:`new` call the lines come since (one read from ``LATE_MS`` before the newest seen,
    so that a line stamped earlier than one shown, another stream's sent a little later, still comes)."""

    def __init__(self, logs: Any, source: LogSource, start: datetime) -> None:
        self.logs, self.source = logs, source
        self.start_ms = self.newest = int(start.timestamp() * 1000)
        self.seen: dict[str, int] = {}  # event id → time, of the lines within LATE_MS of the newest

    def first(self, limit: int) -> list[LogLine]:
        batch, self.seen = _window(self.logs, self.source, self.start_ms, None, limit)  # seen: what it left out too
        self.newest = max([self.start_ms, *self.seen.values()])
        return batch

    def new(self) -> list[LogLine]:
        pages = _filter(self.logs, self.source, max(self.newest - LATE_MS, self.start_ms), None)
        found = []
        for line in sorted((line for page in pages for line in page), key=lambda line: line.timestamp):
            if line.event_id in self.seen:
                continue
            self.seen[line.event_id] = line.timestamp
            self.newest = max(self.newest, line.timestamp)
            found.append(line)
        self.seen = {i: t for i, t in self.seen.items() if t >= self.newest - LATE_MS}
        return found


class Followed:
    """The lines of components as they arrive, each once, a read's in time order across them (``inv logs --follow``,
    ``inv deploy.auto --watch``). :meth:`follow` sets the sources: a new one is read from ``start`` (the newest
    ``limit`` lines of the new ones together first, then as :class:`Tail` reads), one no longer named is not read,
    and one named again goes on where it was (no line twice). :meth:`new` reads each source once (one
    FilterLogEvents each, more when a read has pages): the new lines, oldest first, and the sources whose read failed
    with why (read again at the next call); a group that does not exist yet (a function that never ran) is one of
    those, its error a :class:`NoLogGroup`."""

    def __init__(self, logs: Any, start: datetime, *, limit: int) -> None:
        self.logs, self.start, self.limit = logs, start, limit
        self.tails: dict[LogSource, tuple[Tail, bool]] = {}  # every source followed → (its tail, first read made)
        self.sources: list[LogSource] = []  # those followed now

    def follow(self, sources: Iterable[LogSource]) -> None:
        self.sources = list(dict.fromkeys(sources))
        for source in self.sources:
            self.tails.setdefault(source, (Tail(self.logs, source, self.start), False))

    def new(self) -> tuple[list[tuple[LogSource, LogLine]], list[tuple[LogSource, Exception]]]:
        found: list[tuple[LogSource, LogLine]] = []
        first: list[tuple[LogSource, LogLine]] = []  # of the sources read for the first time: the newest limit of all
        failed: list[tuple[LogSource, Exception]] = []
        for source in self.sources:
            tail, started = self.tails[source]
            try:
                lines = tail.new() if started else tail.first(self.limit)
            except BadFilterPattern:
                raise
            except (UsageError, ClientError, BotoCoreError) as exc:  # no group yet, throttled, denied, unreachable
                failed.append((source, exc))
                continue
            self.tails[source] = (tail, True)
            (found if started else first).extend((source, line) for line in lines)
        found += sorted(first, key=lambda pair: pair[1].timestamp)[-self.limit :]
        return sorted(found, key=lambda pair: pair[1].timestamp), failed
