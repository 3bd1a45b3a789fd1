"""AWS access in one place.

:class:`AwsFactory` is the only thing in deploykit that makes a boto3 session or client. Everything
that calls AWS receives a factory (or a client made by one), so tests hand in a factory whose session
points at moto or whose clients carry a botocore Stubber, and nothing is patched.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.parsers import ResponseParserError

from deploykit.errors import DeployKitError, EnvironmentNotReady, StepFailed, UsageError

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

# Sandbox credentials: moto accepts anything, but botocore refuses to sign without some.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "sandbox", "aws_secret_access_key": "sandbox"}
# Replaces the `profile` of every AWS environment of deploy.toml: another profile's name, or "" for none (boto3's
# default chain: environment variables, web identity, the container's or instance's role), as in CI.
PROFILE_ENV = "DEPLOYKIT_AWS_PROFILE"

# The error codes botocore's standard and adaptive retry modes treat as throttling: the list of
# botocore.retries.standard.ThrottledRetryableChecker (tests/functional/test_throttling_errors.py keeps the two
# equal). A call that still fails with one of these has used up its retries: translate_error says so.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)


# One botocore loader for every session this process makes (botocore's own is one per session): the models it parses
# (the 1.2 MB endpoints file, each service's model, the scan of its 400-odd service folders) are parsed once per
# process instead of once per session. A new session's first client took 60-200 ms here, 10-12 ms with the loader
# shared: a command making sessions for several environments (promotion, inv envs), and each command of a long-lived
# process (the watch, the tests), paid it each time. Sessions and clients are made one at a time (MAKING); what a
# client loads later (a paginator's or a waiter's model, from any thread) goes through the loader's cache, whose only
# race is a file parsed twice, as among the clients and threads of one botocore session.
_loader: botocore.loaders.Loader | None = None
MAKING = threading.RLock()


def new_session(**kwargs: Any) -> boto3.session.Session:
    """A boto3 session (``boto3.session.Session(**kwargs)``) over the process's one botocore loader. The loader is the
    first session's, so it searches what ``$AWS_DATA_PATH`` named then."""
    with MAKING:
        global _loader
        core = botocore.session.get_session()
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
        session = boto3.session.Session(botocore_session=core, **kwargs)
        core.get_scoped_config()  # a profile not configured raises here, as it does making a session of its own loader
        _loader.search_paths[:] = list(dict.fromkeys(_loader.search_paths))  # boto3 adds its folder each session
        return session


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
D = TypeVar("D")
READERS = 8  # reads in flight at once, at most (unless a caller asks for more)
CONNECTIONS = 32  # connections a client keeps open, at most: a wide read (at_once's width) needs as many


# what AWS answers when the credentials have no right to a call
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def maybe_applied(exc: BaseException) -> bool:
    """Whether a call that changes something and ended in ``exc`` may have been applied all the same: its answer was
    lost (a read timeout, a connection cut, an interrupt while it was in flight) or it ended in a server error after
    botocore's retries (an earlier attempt, whose answer was lost, may have been taken). A service's refusal (a 4xx
    answer) was not applied; nor was anything deploykit refused itself."""
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return not isinstance(status, int) or status >= 500
    return isinstance(exc, botocore.exceptions.BotoCoreError | KeyboardInterrupt)


def at_once(reads: Mapping[K, Callable[[], T]], *, width: int = READERS) -> dict[K, T]:
    """Run reads that do not depend on each other at the same time: one round trip for all instead of one each
    (on AWS a call from a laptop takes 50-200 ms; deploy.auto reads a dozen things before it knows what to do).
    boto3 clients are thread-safe, and :meth:`AwsFactory.client` is too. A read that fails raises as it would
    have alone (when several fail, the first in ``reads``' order) without waiting for the others, nor does Ctrl-C;
    reads not started by then are not started. ``width``: how many at once, at most (many small reads of one
    service, such as history records, go wider; :data:`CONNECTIONS` is the most a client serves at once)."""
    if len(reads) <= 1:
        return {key: read() for key, read in reads.items()}
    pool = ThreadPoolExecutor(max_workers=min(width, len(reads)), thread_name_prefix="read")
    try:
        futures = {key: pool.submit(read) for key, read in reads.items()}
        return {key: future.result() for key, future in futures.items()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class Once(Generic[T]):
    """``read()`` once, whichever thread asks first; the others wait for its answer (or its error, raised again to
    each). ``aws.shared(...)`` one to read a thing once per command."""

    def __init__(self, read: Callable[[], T]) -> None:
        self._read, self._lock = read, threading.Lock()
        self._answer: tuple[T | None, BaseException | None] | None = None

    def __call__(self) -> T:
        with self._lock:
            if self._answer is None:
                try:
                    self._answer = (self._read(), None)
                except BaseException as exc:  # raised again to every caller
                    self._answer = (None, exc)
        value, error = self._answer
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


class HandedOn(Generic[K, T]):
    """A read one step of a command makes for the step after it, which would otherwise make it again: kept when
    read, taken once (a later take reads anew). For what nothing changes between the two steps while the run holds
    the environment's lock (the service between register-taskdef and roll-service, a Lambda alias between
    update-code and move-alias). One per command: ``aws.shared(...)`` it. Safe from any thread."""

    def __init__(self, read: Callable[[K], T]) -> None:
        self._read = read
        self._kept: dict[K, T] = {}
        self._guard = threading.Lock()

    def read(self, key: K) -> T:
        """Read ``key`` now, and keep it for the next :meth:`take`."""
        return self.keep(key, self._read(key))

    def keep(self, key: K, value: T) -> T:
        """Keep ``value``, known otherwise (an answer that says it), as ``key``'s for the next :meth:`take`."""
        with self._guard:
            self._kept[key] = value
        return value

    def take(self, key: K) -> T:
        """``key`` as :meth:`read` kept it (once), else read now."""
        with self._guard:
            if key in self._kept:
                return self._kept.pop(key)
        return self._read(key)

    def take_kept(self, key: K, default: D) -> T | D:
        """``key`` as :meth:`read` kept it (once), else ``default``: nothing is read."""
        with self._guard:
            return self._kept.pop(key, default)


def all_of(calls: Mapping[K, Callable[[], T]]) -> dict[K, T]:
    """Run ``calls`` at the same time, as :func:`at_once`, but wait for every one to end before raising the first
    failure in ``calls``' order: for calls that clean up after themselves (a preview deletes its change set), which
    must not be left running when the command ends."""
    if len(calls) <= 1:
        return {key: call() for key, call in calls.items()}

    def caught(call: Callable[[], T]) -> T | BaseException:
        try:
            return call()
        except Exception as exc:  # raised below, once every call has ended
            return exc

    with ThreadPoolExecutor(max_workers=min(len(calls), READERS), thread_name_prefix="all") as pool:
        results = dict(zip(calls, pool.map(caught, calls.values()), strict=True))
    for result in results.values():
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def is_throttling(exc: BaseException) -> bool:
    """Whether AWS refused the call for its rate: a throttling error code, or HTTP 429 (as botocore decides)."""
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    if exc.response.get("Error", {}).get("Code") in THROTTLING_CODES:
        return True
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 429


def local_now() -> datetime:
    """Now by this machine's clock (what :meth:`AwsFactory.now` corrects)."""
    return datetime.now(UTC)


# seconds: this machine's clock is kept for AWS's while the two are no further apart (a Date's second, and the answer's
# way back, make a closer reading meaningless)
SKEW_KEPT = 2.0


class AwsFactory:
    """Makes boto3 clients for one environment: profile, region, endpoint, retries and timeouts.

    Clients are cached per service name, so one command shares one connection pool per service.
    """

    def __init__(
        self, env: EnvConfig, session: boto3.session.Session | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.env = env
        self._session = session
        self._environ = os.environ if environ is None else environ
        self._clients: dict[str, Any] = {}
        self._shared: dict[Callable[[AwsFactory], Any], Any] = {}
        self._shared_lock = threading.Lock()  # separate: make() asks for clients
        # AWS's time minus this machine's, in seconds, from the newest answer that said its time (its Date)
        self._offset: float | None = None
        self._stamped: datetime | None = None  # the last moment now() gave
        self._stamping = threading.Lock()

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            kwargs: dict[str, Any] = {"region_name": self.env.region}
            profile = self.profile
            if profile:
                kwargs["profile_name"] = profile
            elif self.env.is_local:
                kwargs.update(_LOCAL_CREDENTIALS)
            try:
                self._session = new_session(**kwargs)
            except botocore.exceptions.ProfileNotFound as exc:
                if not profile:  # none given: boto3 took $AWS_PROFILE (or $AWS_DEFAULT_PROFILE) of the shell
                    raise UsageError(
                        f"{exc} (environment {self.env.name!r} names no profile: the shell's AWS_PROFILE or "
                        "AWS_DEFAULT_PROFILE does)",
                        next_step="unset AWS_PROFILE (and AWS_DEFAULT_PROFILE), or set it to a configured profile: "
                        "aws configure list-profiles lists them",
                    ) from None
                given = PROFILE_ENV in self._environ and not self.env.is_local  # never applies to a local one
                named = f"${PROFILE_ENV}" if given else "'profile' in deploy.toml"
                ci = (
                    "a local endpoint takes any credentials: remove the profile from its table"
                    if self.env.is_local
                    else f'in CI, with the credentials in the environment: {PROFILE_ENV}=""'
                )
                raise UsageError(
                    f"AWS profile {profile!r} (environment {self.env.name!r}, from {named}) is not configured",
                    next_step=f"run: aws configure --profile {profile} (or fix {named}); {ci}",
                ) from None
        return self._session

    def _note_time(self, parsed: Mapping[str, Any], **_: Any) -> None:
        date = served(parsed)
        if date is not None:  # Date is to the second, cut short: its middle
            self._offset = (date - local_now()).total_seconds() + 0.5

    @property
    def offset(self) -> float:
        """How far AWS's clock is ahead of this machine's (seconds; negative: behind), as the newest answer's ``Date``
        said it; 0 while it is within :data:`SKEW_KEPT`, or no answer said its time (moto in-process, an
        S3-compatible store without ``Date``)."""
        offset = self._offset
        return offset if offset is not None and abs(offset) > SKEW_KEPT else 0.0

    def now(self) -> datetime:
        """Now by AWS's clock (:attr:`offset`): what a record several machines write to, and read in the order it
        holds, is stamped with (the history's runs): a laptop whose clock runs 15 minutes behind stamped its
        rollback before the deploy it took off, and the next rollback went forward onto that release. Never before
        the moment it gave last (a Date is to the second: a newer answer's may move the offset back by up to one),
        so that a command's records (a failed run's, then its automatic rollback's) keep their order."""
        with self._stamping:
            moment = local_now() + timedelta(seconds=self.offset)
            if self._stamped is not None and moment <= self._stamped:
                moment = self._stamped + timedelta(microseconds=1)
            self._stamped = moment
            return moment

    @property
    def profile(self) -> str | None:
        """The AWS profile this factory's session uses (:func:`profile_of`)."""
        return profile_of(self.env, self._environ)

    def account(self) -> str:
        """The AWS account these credentials act in (STS GetCallerIdentity, asked once per factory); a UsageError
        when the environment pins another one (``account`` in deploy.toml): nothing is changed in a wrong account."""
        found = self.shared(caller_account)
        if self.env.account and found != self.env.account:
            how = f"aws sso login --profile {self.profile}" if self.profile else "switch to that account's credentials"
            raise UsageError(
                f"the credentials for environment {self.env.name!r} act in AWS account {found}, but deploy.toml "
                f"pins {self.env.account} for it: nothing was changed",
                next_step=f"use credentials of account {self.env.account} ({how}), or fix 'account' in deploy.toml",
            )
        return found

    @property
    def botocore_config(self) -> BotoConfig:
        retries: Any = {"mode": self.env.retry_mode, "max_attempts": self.env.max_attempts}
        return BotoConfig(
            region_name=self.env.region,
            retries=retries,
            connect_timeout=self.env.connect_timeout,
            read_timeout=self.env.read_timeout,
            user_agent_extra="deploykit",
            max_pool_connections=CONNECTIONS,
        )

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` (``"ecs"``, ``"ecr"``, ``"elbv2"``...), cached; safe from any thread."""
        with MAKING:  # a boto3 session is not thread-safe, nor is making clients over one loader: one at a time
            if service not in self._clients:
                client = self.session.client(
                    service,  # type: ignore[call-overload]
                    endpoint_url=self.env.endpoint_url,
                    config=self.botocore_config,
                )
                client.meta.events.register("after-call-error", _name_failed_call)
                client.meta.events.register_last("after-call", self._note_time)  # after what rewrites an answer
                self._clients[service] = client
            return self._clients[service]

    def unretried_client(self, service: str, read_timeout: float | None = None) -> Any:
        """A new client of ``service`` that sends each call once, never again on a timeout or a 5xx (botocore's
        retries would: for a call that must not run twice, Lambda's Invoke), reading an answer for up to
        ``read_timeout`` seconds (default: the environment's). Not cached."""
        config = self.botocore_config.merge(
            BotoConfig(
                retries={"mode": "standard", "max_attempts": 0}, read_timeout=read_timeout or self.env.read_timeout
            )
        )
        with MAKING:
            client = self.session.client(service, endpoint_url=self.env.endpoint_url, config=config)  # type: ignore[call-overload]
        client.meta.events.register("after-call-error", _name_failed_call)
        return client

    def shared(self, make: Callable[[AwsFactory], T]) -> T:
        """One ``make(self)`` per factory, the same from any thread: what a command reads once and remembers
        over this factory's clients (e.g. :class:`deploykit.stacks.StackOutputs`)."""
        with self._shared_lock:
            if make not in self._shared:
                self._shared[make] = make(self)
            return self._shared[make]  # type: ignore[no-any-return]


def caller_account(aws: AwsFactory) -> str:
    """The account the factory's credentials act in, unchecked (STS GetCallerIdentity); ``aws.shared(...)`` it to
    ask once. :meth:`AwsFactory.account` also checks it against the environment's."""
    return str(aws.client("sts").get_caller_identity()["Account"])


def profile_of(env: EnvConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The AWS profile the environment's sessions use: ``$DEPLOYKIT_AWS_PROFILE`` when set ("" for none), else the
    environment's; for an environment on this machine (the sandbox takes any credentials), its own alone."""
    if env.is_local:
        return env.profile
    if PROFILE_ENV in environ:
        return environ[PROFILE_ENV] or None
    return env.profile


def answered(exc: botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError) -> str:
    """What AWS answered, for the row of one item a call failed for: ``Code: message`` (a refusal), else the SDK's
    own words (the endpoint could not be reached)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


# CloudFormation's refusal of a service role it cannot take on (gone, not trusting it, not passable by the caller)
_ROLE_REFUSED = re.compile(r"Role (?P<role>\S+) is invalid or cannot be assumed")


def role_refused(exc: botocore.exceptions.ClientError, env: str | None, configured: str | None) -> UsageError | None:
    """A UsageError naming the way out when ``exc`` is CloudFormation's refusal of a service role (a ValidationError,
    ``Role ARN is invalid or cannot be assumed``); None for any other error. ``configured``: the environment's
    ``cloudformation_role_arn``. Nothing was changed: CloudFormation refuses before it starts."""
    error = exc.response.get("Error", {})
    found = _ROLE_REFUSED.search(str(error.get("Message", ""))) if error.get("Code") == "ValidationError" else None
    if not found:
        return None
    role, table = found["role"], f"[environments.{env}]" if env else "the environment's table"
    if role == configured:
        why = (
            "the role of cloudformation_role_arn in deploy.toml: it must exist, trust cloudformation.amazonaws.com, "
            "and the deploying credentials need iam:PassRole on it"
        )
        next_step = f"fix the role (or cloudformation_role_arn of {table}), then rerun"
    else:
        why = "the role an earlier operation gave the stack, which CloudFormation keeps using until another is given"
        next_step = (
            f"give it a role that works: cloudformation_role_arn in {table} of deploy.toml (every deploy and destroy "
            "passes it), or make the old role again; then rerun"
        )
    return UsageError(f"CloudFormation cannot act with role {role} ({why}); nothing was changed", next_step=next_step)


# What a botocore call raises: its own errors, AWS's answers, and an answer that is no AWS's (botocore's parser error,
# no BotoCoreError: a proxy's error page made a traceback)
AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ResponseParserError)


def translate_error(exc: Exception, env: EnvConfig) -> DeployKitError:
    """Turn a botocore failure into a message that says what failed and what to run next (one deploykit already
    said in its own words is returned as it is). The next steps name the profile the session used
    (:func:`profile_of`): in CI, with ``DEPLOYKIT_AWS_PROFILE=""``, the job's own credentials, never deploy.toml's."""
    if isinstance(exc, DeployKitError):
        return exc
    profile = profile_of(env)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        if profile:
            how = f"run: aws sso login --profile {profile}"
        elif os.environ.get(PROFILE_ENV) == "" and env.profile:
            how = f"give the job its credentials (the AWS_* variables, or its role): {PROFILE_ENV}='' uses them"
        else:
            how = "run: aws configure (or set 'profile' in deploy.toml)"
        return UsageError(f"no AWS credentials for environment {env.name!r}", next_step=how)
    if isinstance(exc, botocore.exceptions.TokenRetrievalError | botocore.exceptions.SSOTokenLoadError):
        return UsageError(
            f"the AWS SSO session of profile {profile!r} has expired",
            next_step=f"run: aws sso login --profile {profile}",
        )
    if isinstance(exc, ResponseParserError):  # an answer that is no AWS's: a proxy's error page, most often
        named = [name for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy") if os.environ.get(name)]
        where = env.endpoint_url or f"AWS ({env.region})"
        why = f"{where} answered with something that is not AWS's ({str(exc)[:120]})" + (
            f": the proxy of {named[0]} in between?" if named else ""
        )
        how = (
            f"list {where}'s host in NO_PROXY (inv lists this machine there itself), or fix endpoint_url"
            if named and env.endpoint_url
            else "check the endpoint and the network between (a proxy, a captive portal), then rerun"
        )
        kind = EnvironmentNotReady if env.is_local else StepFailed
        return kind(why, next_step=how)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        if env.is_local:
            return EnvironmentNotReady(
                f"the sandbox's AWS endpoint {env.endpoint_url} is not answering",
                next_step=f"start the sandbox: inv sandbox.up (or fix endpoint_url of [environments.{env.name}])",
            )
        return StepFailed(f"cannot reach AWS ({exc})", next_step="check the network or proxy, then rerun")
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        operation = getattr(exc, "operation_name", "an AWS call")
        if code in ("ExpiredToken", "ExpiredTokenException", "RequestExpired"):
            return UsageError(
                f"the AWS credentials of environment {env.name!r} have expired",
                next_step=f"run: aws sso login --profile {profile}" if profile else "refresh them",
            )
        if code in DENIED:
            return UsageError(
                f"AWS refused {operation} in {env.name!r}: {message}",
                next_step="use a role allowed to deploy (see README, 'Permissions')",
            )
        if is_throttling(exc):
            return throttled(exc, env)
        if refused := role_refused(exc, env.name, env.cloudformation_role_arn):
            return refused
        return StepFailed(f"AWS {operation} failed ({code}): {message}", next_step="rerun; if it persists, inv health")
    operation = getattr(exc, OPERATION_ATTRIBUTE, None)  # a call that got no answer: which one, when it was ours
    return StepFailed(f"AWS {operation or 'call'} failed: {exc}", next_step="rerun; if it persists, inv health")


OPERATION_ATTRIBUTE = "deploykit_operation"


def _name_failed_call(exception: BaseException, event_name: str = "", **_: Any) -> None:
    """botocore's ``after-call-error``: a call that got no answer (a read timeout, a connection cut) raises an
    exception that names no operation, where a refusal (ClientError) does: the operation is kept on it, for the
    message (``AWS UpdateService failed: Read timeout ...``)."""
    with contextlib.suppress(AttributeError):  # an exception type that takes no attribute: said without it
        setattr(exception, OPERATION_ATTRIBUTE, event_name.rsplit(".", 1)[-1])


def throttled(exc: botocore.exceptions.ClientError, env: EnvConfig) -> StepFailed:
    """The error of a call AWS still throttled after botocore's retries: the call changed nothing, nor did any
    after it; waiting and rerunning converges, and the retries can be raised for the environment."""
    error = exc.response.get("Error", {})
    code, message = error.get("Code") or "HTTP 429", error.get("Message") or "rate exceeded"
    operation = getattr(exc, "operation_name", "an AWS call")
    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
    attempts = (
        f"after {retries + 1} attempt{'s' if retries else ''}" if isinstance(retries, int) else "after its retries"
    )
    return StepFailed(
        f"AWS throttled {operation} in {env.name} ({code}) {attempts}: {message}; nothing after this call was changed",
        next_step="wait a minute and rerun the same command (it skips what is already done); to retry more, raise "
        f'max_attempts or use retry_mode = "adaptive" for [environments.{env.name}] in deploy.toml',
    )


def utc(moment: object) -> datetime | None:
    """A time S3 gave (a ``LastModified``), in UTC; None when there is none."""
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def served(answer: Mapping[str, Any]) -> datetime | None:
    """The service's time when it answered (S3's for the lock, CloudWatch's and STS's for deploykit.watch): the
    ``Date`` header of the answer (a call's, or a ClientError's ``response``); None when there is none or it cannot be
    read (an S3-compatible store may send none)."""
    headers = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    date = headers.get("date")
    if not date:
        return None
    try:
        return utc(parsedate_to_datetime(str(date)))
    except (TypeError, ValueError, IndexError):
        return None
