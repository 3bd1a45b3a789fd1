"""``inv lambda.cleanup``: delete old published versions of the environment's Lambda functions, never one that
may be needed.

Every fast-path deploy publishes a version, and Lambda keeps each one's code until it is deleted: the code storage
of a region is limited (75 GB by default), and reading a function's versions, as ``deploy.lambda`` and ``inv
rollback`` do, costs a ListVersionsByFunction page per 50 versions. A published version is kept when any of these
holds (every kept version says which):

- it is one of the ``keep`` newest published versions of its function (by number);
- an alias of the function serves it, or routes a weighted share of its requests to it (a canary);
- an event source mapping (a queue, a stream) invokes that very version;
- the stack holding the function holds it as a resource (``AWS::Lambda::Version``: CloudFormation's own);
- it is **recorded**: its description names (``git <sha12>``) the function's SHA in the environment's live record
  or in one of its newest :data:`HISTORY_RECORDS` deployment records (deployed, or live before that deploy), or a
  commit ``inv rollback`` may go back to (the function's newest two successful deploys, by commit, of the newest
  :data:`deploykit.history.ROLLBACK_DEPTH` records, as many as it reads: :func:`deploykit.history.rollback_targets`),
  so ``inv rollback`` finds what it goes back to however many deploys of other components came since. A recorded
  commit no version names (``deploy.full`` and ``deploy.stack`` let CloudFormation publish, which names the code
  only) keeps the newest version running that commit's code, packaged from this clone as ``inv rollback`` compares
  it; a commit this clone does not have keeps every version no commit names, since which one it was cannot be told.

Everything else is deleted (DeleteFunction with the version as qualifier; ``$LATEST`` is never touched).
:func:`plan_cleanup` decides and reads nothing; the readers and :func:`delete_versions` talk to AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import lambda_chain, packaging
from deploykit.aws import AwsFactory, at_once
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.git import DIRTY
from deploykit.history import ROLLBACK_DEPTH, History, Recent
from deploykit.image_cleanup import tag_key
from deploykit.lock import STOPPED, LockLost, lost_lease
from deploykit.output import tabulate
from deploykit.stacks import LAMBDA_VERSION, is_missing_stack

DEFAULT_KEEP = 10
HISTORY_RECORDS = 30


# -- the decision (pure) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One published version of a function, as ListVersionsByFunction details it."""

    function: str  # its folder of lambda/
    function_name: str
    number: int
    description: str
    code_size: int
    last_modified: str
    code_sha256: str = ""

    @classmethod
    def from_lambda(cls, function: str, detail: Mapping[str, Any]) -> Version:
        return cls(
            function=function,
            function_name=str(detail.get("FunctionName") or ""),
            number=int(detail["Version"]),
            description=str(detail.get("Description") or ""),
            code_size=int(detail.get("CodeSize") or 0),
            last_modified=str(detail.get("LastModified") or "")[:16].replace("T", " "),
            code_sha256=str(detail.get("CodeSha256") or ""),
        )

    @property
    def git(self) -> str | None:
        return lambda_chain.git_sha_of(self.description)


@dataclass(frozen=True)
class Choice:
    version: Version
    delete: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """Every published version, by function then newest first, each kept or deleted with its reasons."""

    choices: tuple[Choice, ...]
    keep: int

    @property
    def to_delete(self) -> tuple[Version, ...]:
        return tuple(c.version for c in self.choices if c.delete)

    @property
    def bytes_to_free(self) -> int:
        return sum(v.code_size for v in self.to_delete)


@dataclass(frozen=True)
class RecordedCode:
    """What the recorded commits no version names ran: function → {CodeSha256 → why}, and function → why every
    version no commit names is kept (a recorded commit this clone does not have)."""

    codes: dict[str, dict[str, str]]
    unknown: dict[str, str]


def plan_cleanup(
    versions: Iterable[Version],
    *,
    keep: int,
    held: Mapping[tuple[str, int], Sequence[str]],
    recorded: Mapping[str, Mapping[str, str]],
    recorded_code: RecordedCode | None = None,
) -> Decision:
    """Decide which versions to delete; every version gets its reasons.

    ``held``: (function name, version number) → why something uses it ("alias live", "the API stack's ...").
    ``recorded``: function (folder) → {git SHA (12) → why} from the history; ``recorded_code``: the code of the
    recorded commits no version names (:func:`recorded_code`).
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    code = recorded_code or RecordedCode({}, {})
    by_function: dict[str, list[Version]] = {}
    for version in versions:
        by_function.setdefault(version.function, []).append(version)
    choices: list[Choice] = []
    for function in sorted(by_function):
        ordered = sorted(by_function[function], key=lambda v: -v.number)
        runs: dict[str, int] = {}  # CodeSha256 → the newest version running it (what rollback goes back to)
        for version in ordered:
            runs.setdefault(version.code_sha256, version.number)
        for rank, version in enumerate(ordered):
            reasons: list[str] = [f"newest {keep}"] if rank < keep else []
            reasons += held.get((version.function_name, version.number), ())
            sha = version.git
            if sha and sha in recorded.get(function, {}):
                reasons.append(recorded[function][sha])
            ran = code.codes.get(function, {}).get(version.code_sha256)
            if ran and runs[version.code_sha256] == version.number:
                reasons.append(f"runs the code of {ran}")
            if not sha and function in code.unknown:
                reasons.append(code.unknown[function])
            if reasons:
                choices.append(Choice(version, False, tuple(reasons)))
            else:
                choices.append(Choice(version, True, (f"older than the newest {keep}, not routed to, not recorded",)))
    return Decision(tuple(choices), keep)


# -- the readers ------------------------------------------------------------------------------------------------


def function_versions(aws: AwsFactory, functions: Mapping[str, str]) -> tuple[list[Version], dict[str, str]]:
    """The published versions (not ``$LATEST``) of each function (folder → function name), newest first, and, from
    the same listing, the CodeSha256 of each one's ``$LATEST`` (what its zip cleanup keeps)."""
    client = aws.client("lambda")
    published: list[Version] = []
    latest: dict[str, str] = {}
    for function, function_name in sorted(functions.items()):
        numbered: list[Version] = []
        for detail in lambda_chain.all_versions(client, function_name):
            if str(detail.get("Version")) == "$LATEST":
                latest[function] = str(detail.get("CodeSha256") or "")
            else:
                numbered.append(Version.from_lambda(function, detail))
        published += sorted(numbered, key=lambda v: -v.number)
    return published, latest


def routed_versions(aws: AwsFactory, functions: Mapping[str, str]) -> dict[tuple[str, int], list[str]]:
    """(function name, version) → the aliases that serve it or route a share of their requests to it."""
    client = aws.client("lambda")
    held: dict[tuple[str, int], list[str]] = {}
    for function_name in sorted(functions.values()):
        for page in client.get_paginator("list_aliases").paginate(FunctionName=function_name):
            for alias in page.get("Aliases") or ():
                name = alias.get("Name")
                if str(alias.get("FunctionVersion", "")).isdigit():
                    held.setdefault((function_name, int(alias["FunctionVersion"])), []).append(f"alias {name}")
                weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
                for version, weight in weights.items():
                    why = f"alias {name} routes {float(weight):.0%} of its requests to it (a canary)"
                    held.setdefault((function_name, int(version)), []).append(why)
    return held


def mapped_versions(aws: AwsFactory, functions: Mapping[str, str]) -> dict[tuple[str, int], list[str]]:
    """(function name, version) → the event source mappings (a queue, a stream) that invoke that very version.
    Every mapping of the account and region is listed (few, as a rule): a filter by function name does not
    promise to list those of its versions."""
    names = set(functions.values())
    held: dict[tuple[str, int], list[str]] = {}
    for page in aws.client("lambda").get_paginator("list_event_source_mappings").paginate():
        for mapping in page.get("EventSourceMappings") or ():
            parts = str(mapping.get("FunctionArn") or "").split(":")  # ...:function:<name>[:<qualifier>]
            if len(parts) == 8 and parts[6] in names and parts[7].isdigit():
                source = str(mapping.get("EventSourceArn") or "?").rsplit(":", 1)[-1]
                why = f"event source mapping {mapping.get('UUID', '?')} ({source}) invokes it"
                held.setdefault((parts[6], int(parts[7])), []).append(why)
    return held


def stack_versions(aws: AwsFactory, env: EnvConfig) -> dict[tuple[str, int], list[str]]:
    """(function name, version) → why: the versions the stacks that may hold functions (the API stack, the team's
    own) hold as resources. A stack not deployed holds none."""
    held: dict[tuple[str, int], list[str]] = {}
    stacks = env.stacks.function_stacks()
    for found in at_once({stack: partial(_stack_versions, aws, stack) for stack in stacks}).values():
        for version, why in found.items():
            held.setdefault(version, []).extend(why)
    return held


def _stack_versions(aws: AwsFactory, stack: str) -> dict[tuple[str, int], list[str]]:
    held: dict[tuple[str, int], list[str]] = {}
    paginator = aws.client("cloudformation").get_paginator("list_stack_resources")
    try:
        for page in paginator.paginate(StackName=stack):
            for resource in page.get("StackResourceSummaries") or ():
                if resource.get("ResourceType") != LAMBDA_VERSION:
                    continue
                arn = str(resource.get("PhysicalResourceId") or "")  # arn:aws:lambda:...:function:<name>:<version>
                parts = arn.split(":")
                if len(parts) >= 8 and parts[-1].isdigit():
                    why = f"held by {stack} ({resource.get('LogicalResourceId')})"
                    held.setdefault((parts[-2], int(parts[-1])), []).append(why)
    except ClientError as exc:
        if not is_missing_stack(exc):
            raise
    return held


def recent_history(aws: AwsFactory, env: EnvConfig) -> Recent | None:
    """The environment's live record and its newest records, as many as ``inv rollback`` reads (and at least
    :data:`HISTORY_RECORDS`); None when it has no history."""
    found = History.of(aws, env)
    return None if found is None else found.recent(max(HISTORY_RECORDS, ROLLBACK_DEPTH))


class CodeOf:
    """function, commit → :func:`lambda_chain.code_at` (its SHA12, the function's CodeSha256 packaged as in it, or
    None), each packaged once."""

    def __init__(self, root: Path, architecture: str, python: str = packaging.DEFAULT_PYTHON) -> None:
        self.root = root
        self.architecture = architecture
        self.python = python
        self._found: dict[tuple[str, str], tuple[str, str] | None] = {}
        # why a commit this clone has could not be packaged (a submodule's commit it lacks), by function and commit
        self.unpackaged: dict[tuple[str, str], str] = {}

    def __call__(self, function: str, commit: str) -> tuple[str, str] | None:
        key = (function, commit)
        if key not in self._found:
            try:
                self._found[key] = lambda_chain.code_at(self.root, function, commit, self.architecture, self.python)
            except UsageError as exc:  # not known, as a commit not in this clone: the cleanup keeps its version
                self._found[key], self.unpackaged[key] = None, exc.message
        return self._found[key]


def recorded_shas(
    recent: Recent | None,
    functions: Iterable[str],
    versions: Sequence[Version] = (),
    code_of: CodeOf | None = None,
    records: int = HISTORY_RECORDS,
) -> dict[str, dict[str, str]]:
    """function (folder) → {SHA → why}: its live SHA, its SHAs in the newest ``records`` records and the commits
    ``inv rollback`` may go back to (:meth:`Recent.recorded`; SHA12s, and a dirty deploy's ``<sha12>-dirty-<hash>``
    as its version names it). A commit is there to go back to, as ``inv rollback`` finds one, when one of
    ``versions`` names it, or runs its code (``code_of``: the function packaged as in the commit)."""
    found: dict[str, dict[str, str]] = {function: {} for function in functions}
    if recent is None:
        return found
    named = {(v.function, v.git) for v in versions if v.git}
    runs = {(v.function, v.code_sha256) for v in versions}

    def usable(component: str, sha: str) -> bool:
        function = component.removeprefix("lambda:")
        if (function, tag_key(sha)) in named:
            return True
        code = None if code_of is None or DIRTY in sha else code_of(function, sha)
        return code is not None and (function, code[1]) in runs

    recorded = recent.recorded([f"lambda:{function}" for function in found], records, usable)
    for function, shas in found.items():
        for sha, why in recorded[f"lambda:{function}"]:
            shas.setdefault(tag_key(sha), why)
    return found


def recorded_code(
    root: Path,
    versions: Sequence[Version],
    recorded: Mapping[str, Mapping[str, str]],
    *,
    architecture: str,
    python: str = packaging.DEFAULT_PYTHON,
    code_of: CodeOf | None = None,
) -> RecordedCode:
    """The CodeSha256 of each recorded commit no version names, each function packaged as in that commit for
    ``architecture`` and CPython ``python`` (reproducibly: :func:`lambda_chain.code_at`, as ``inv rollback`` finds
    such a version; ``code_of``: what was packaged already)."""
    code_of = code_of or CodeOf(root, architecture, python)
    named = {(v.function, v.git) for v in versions if v.git}
    codes: dict[str, dict[str, str]] = {}
    unknown: dict[str, str] = {}
    for function, shas in recorded.items():
        for sha, why in shas.items():
            if (function, sha) in named or DIRTY in sha:  # a dirty deploy's version always names it
                continue
            found = code_of(function, sha)
            if found is None:
                unpackaged = code_of.unpackaged.get((function, sha))
                missing = f"cannot be packaged here ({unpackaged})" if unpackaged else "is not in this clone"
                unknown.setdefault(function, f"names no commit, and {sha} ({why}) {missing} to compare")
            else:
                codes.setdefault(function, {}).setdefault(found[1], f"{sha} ({why})")
    return RecordedCode(codes, unknown)


# -- deleting ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    deleted: tuple[tuple[str, int], ...]  # (function name, version)
    failed: dict[tuple[str, int], str]
    gone: tuple[tuple[str, int], ...] = ()  # those of ``deleted`` that were gone already (another cleanup, a person)
    stopped: LockLost | None = None  # the lock was lost: the versions from the one it was found lost are not done


ALREADY_GONE = "ResourceNotFoundException"  # DeleteFunction's answer for a version that is not there (any more)


def delete_versions(
    aws: AwsFactory, versions: Sequence[Version], holding: Callable[[], None] | None = None
) -> Deletion:
    """DeleteFunction with each version as its qualifier; a refusal (an alias moved onto it meanwhile, access) is
    that version's failure, the others go on. A version already gone counts as deleted (in ``gone``). ``holding``
    (the lease's check) is asked before each: once the lock is lost, the rest is not done (``stopped``)."""
    client = aws.client("lambda")
    deleted: list[tuple[str, int]] = []
    gone: list[tuple[str, int]] = []
    failed: dict[tuple[str, int], str] = {}
    for index, version in enumerate(versions):
        key = (version.function_name, version.number)
        if (stopped := lost_lease(holding)) is not None:
            failed.update(dict.fromkeys(((v.function_name, v.number) for v in versions[index:]), STOPPED))
            return Deletion(tuple(deleted), failed, tuple(gone), stopped)
        try:
            client.delete_function(FunctionName=version.function_name, Qualifier=str(version.number))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == ALREADY_GONE:
                deleted.append(key)
                gone.append(key)
                continue
            failed[key] = f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
        except BotoCoreError as exc:  # no answer (a timeout, the connection lost): this one failed, the next goes on
            failed[key] = f"{type(exc).__name__}: {exc}"
        else:
            deleted.append(key)
    return Deletion(tuple(deleted), failed, tuple(gone))


# -- output -----------------------------------------------------------------------------------------------------


def size(count: int) -> str:
    """A zip's size: kB below a megabyte (most functions' code), MB above."""
    return f"{count / 1000:.1f} kB" if count < 1_000_000 else f"{count / 1_000_000:.1f} MB"


def action_of(choice: Choice, *, dry_run: bool, deletion: Deletion | None) -> str:
    if not choice.delete:
        return "keep"
    if dry_run or deletion is None:
        return "would delete"
    return "FAILED" if (choice.version.function_name, choice.version.number) in deletion.failed else "deleted"


def table(decision: Decision, *, dry_run: bool, deletion: Deletion | None = None) -> str:
    rows = []
    for choice in decision.choices:
        version = choice.version
        why = "; ".join(choice.reasons)
        failure = deletion.failed.get((version.function_name, version.number)) if deletion else None
        if deletion is not None and (version.function_name, version.number) in deletion.gone:
            why = f"already gone (another cleanup, or a person, deleted it first); {why}"
        rows.append(
            [
                version.function,
                version.number,
                version.git or "-",
                version.last_modified,
                size(version.code_size),
                action_of(choice, dry_run=dry_run, deletion=deletion),
                f"{failure} ({why})" if failure else why,
            ]
        )
    return tabulate(rows, headers=["function", "version", "git", "published (UTC)", "code", "action", "why"])


def _versions(count: int) -> str:
    return f"{count} version" + ("" if count == 1 else "s")


def freed_by(decision: Decision, deletion: Deletion | None) -> int:
    """The code storage ``deletion`` freed: of the versions it deleted, not those already gone."""
    if deletion is None:
        return 0
    freed = set(deletion.deleted) - set(deletion.gone)
    return sum(v.code_size for v in decision.to_delete if (v.function_name, v.number) in freed)


def summary(decision: Decision, *, dry_run: bool, deletion: Deletion | None = None) -> str:
    total = len(decision.choices)
    if not total:
        return "no published versions: nothing to delete"
    if not decision.to_delete:
        return f"nothing to delete: all {_versions(total)} are kept"
    if dry_run or deletion is None:
        return (
            f"dry run: would delete {_versions(len(decision.to_delete))} of {total}, freeing "
            f"{size(decision.bytes_to_free)} of code storage; nothing was deleted"
        )
    line = f"deleted {_versions(len(deletion.deleted))}, freed {size(freed_by(decision, deletion))} of code storage"
    if deletion.gone:
        line += f"; {len(deletion.gone)} of them already gone"
    if deletion.failed:
        line += f"; {_versions(len(deletion.failed))} could not be deleted"
    return line


def to_json(decision: Decision, *, env: str, dry_run: bool, deletion: Deletion | None) -> dict[str, Any]:
    gone = set(deletion.deleted) if deletion else set()
    return {
        "env": env,
        "keep": decision.keep,
        "dry_run": dry_run,
        "versions": [
            {
                "function": c.version.function,
                "function_name": c.version.function_name,
                "version": c.version.number,
                "git": c.version.git,
                "code_bytes": c.version.code_size,
                "action": action_of(c, dry_run=dry_run, deletion=deletion),
                "why": list(c.reasons),
            }
            for c in decision.choices
        ],
        "to_delete": len(decision.to_delete),
        "deleted": len(gone),
        "freed_bytes": freed_by(decision, deletion),
        "failures": {f"{name}:{number}": why for (name, number), why in (deletion.failed if deletion else {}).items()},
        "already_gone": [f"{name}:{number}" for name, number in (deletion.gone if deletion else ())],
    }
