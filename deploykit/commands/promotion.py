"""An environment promoted from another one (promote_from): what the source runs, and the refusal of what it
does not run."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import partial

from deploykit import (
    auto,
    git,
    history,
    image_cleanup,
    lambda_chain,
    planner,
    rollback,
)
from deploykit.aws import AwsFactory, at_once
from deploykit.commands.core import Runtime, aws_errors
from deploykit.commands.views import endpoints_if_deployed
from deploykit.config import Config, EnvConfig
from deploykit.errors import DeployKitError, UsageError
from deploykit.stacks import (
    StackOutputs,
)


@dataclass(frozen=True)
class Source:
    """The environment another one is promoted from: its AWS (its own credentials; every later read of it goes
    through this one, its stacks' outputs read once) and what it runs, per component."""

    aws: AwsFactory
    live: dict[str, str | None]
    entries: dict[str, dict[str, str]] = field(default_factory=dict)  # its live record's

    @property
    def name(self) -> str:
        return self.aws.env.name


def read_source(runtime: Runtime, config: Config, name: str) -> Source:
    """What the environment ``name`` runs, read with its own credentials; an error reading it names it as the
    source of the promotion check (on AWS, "cannot reach AWS" says nothing of which environment's credentials, or
    region, failed)."""
    source = config.environment(name)
    aws = runtime.aws_factory(source)
    try:
        with aws_errors(source):
            if source.account:  # another account's credentials would find nothing there: "does not run it", wrongly
                aws.account()
            entries: dict[str, dict[str, str]] = {}
            live = auto.live_components(aws, config, source, endpoints_if_deployed(aws, source), entries=entries)
            return Source(aws, live, entries)
    except DeployKitError as exc:
        exc.message = f"reading {name}, the environment releases are promoted from, failed: {exc.message}"
        raise


def source_ran(runtime: Runtime, config: Config, env: EnvConfig, component: str, sha: str) -> bool:
    """Whether the environment ``env`` is promoted from runs ``component`` at ``sha`` (an image tag, a commit), or
    ran it (live after one of its newest runs of it that worked, or before one)."""
    source = read_source(runtime, config, str(env.promote_from))
    return source.live.get(component) == sha or ran_there(source.aws, component, sha)


def ran_there(aws: AwsFactory, component: str, sha: str) -> bool:
    """Whether the environment of ``aws`` ran ``component`` at ``sha`` (:func:`deploykit.rollback.ran_at`), by its
    newest runs of it and its newest runs of anything (which carried it, unchanged, at their commit)."""
    env = aws.env
    with aws_errors(env):
        store = history.History.of(aws, env)
        if store is None:
            return False
        found = at_once(
            {
                "deployed": partial(store.records_of, component, RAN_BEFORE_RUNS),
                "all": partial(store.records, RAN_BEFORE_RUNS),
            }
        )
    return rollback.ran_at([*found["deployed"], *found["all"]], component, sha)


# the newest runs of a component looked through for a release it ran (as many as inv rollback reads)
RAN_BEFORE_RUNS = 100


@dataclass(frozen=True)
class Promotion:
    """What :func:`require_promoted` let through: the components deployed with ``--unpromoted`` (the run's history
    record names them), and the app's image when it is to be copied from the source (build once)."""

    unpromoted: tuple[str, ...] = ()
    image: planner.PromotedImage | None = None


# the source's newest runs whose deploys may be promoted, besides what it runs now: as many as image cleanup keeps the
# images of (so a promoted app's image is still in the source's registry)
VERIFIED_RUNS = image_cleanup.HISTORY_RECORDS


def promotion_of(
    config: Config, source: Source, components: Collection[str], revision: git.Revision, target: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """(component → why ``source`` never ran it as ``revision`` has it, component → the commit it ran it so at
    before, when it runs something else now). What it runs settles most; only for the rest are its newest
    :data:`VERIFIED_RUNS` runs read (with its credentials), each a deploy that passed its smoke there. A Lambda
    function must also be the bytes it runs or ran (:func:`auto.other_bytes`): the same sources can vendor other
    requirements on another machine."""
    why = auto.unpromoted(config, source.name, source.live, components, revision, target)
    why |= {  # what it runs, never smoked there: no proof (an earlier run of the same code that smoked may be)
        component: f"{source.name} runs it at {source.live.get(component)}, deployed there without its smoke "
        "(--no-smoke), and no smoke has passed there since (inv smoke --env "
        f"{source.name} proves it, as does any deploy there whose smoke passes)"
        for component in components
        if component not in why and history.UNSMOKED in source.entries.get(component, {})
    }
    earlier: dict[str, str] = {}
    if why:
        earlier = _earlier(config, source.aws, why, revision)
        why = {c: reason for c, reason in why.items() if c not in earlier}
    functions = [c.split(":", 1)[1] for c in components if c.startswith("lambda:") and c not in why]
    if functions:  # promoted by the change rules: the same sources; the same bytes too?
        why |= _lambda_bytes(config, source.aws, functions, earlier)
    return why, {c: sha for c, sha in earlier.items() if c not in why}


def _earlier(config: Config, aws: AwsFactory, why: Mapping[str, str], revision: git.Revision) -> dict[str, str]:
    """component → the commit the environment of ``aws`` ran it at as ``revision`` has it, among its newest runs
    that passed, for the components of ``why`` (those it does not run so now)."""
    environment = aws.env
    with aws_errors(environment):
        store = history.History.of(aws, environment)
        records = store.records(VERIFIED_RUNS) if store else []
    return auto.promoted_earlier(config, auto.verified_in(records, why), revision)


def _lambda_bytes(
    config: Config, aws: AwsFactory, functions: Collection[str], earlier: Collection[str]
) -> dict[str, str]:
    """lambda:<fn> → why the environment of ``aws`` runs, or ran, other bytes of ``functions`` than this checkout
    packages."""
    environment = aws.env
    with aws_errors(environment):
        names = lambda_chain.deployed_functions(StackOutputs.of(aws), environment, required=False)
        packages = {fn: lambda_chain.package(config, environment, fn) for fn in functions if fn in names}
        return auto.other_bytes(aws.client("lambda"), environment.name, names, packages, earlier)


def require_promoted(
    runtime: Runtime,
    config: Config,
    environment: EnvConfig,
    revision: git.Revision,
    components: Collection[str],
    *,
    unpromoted: bool,
    source_read: Source | None = None,
) -> Promotion:
    """An environment with ``promote_from`` takes only what that one runs, or ran in a run that passed (see
    :func:`promotion_of`): UsageError (exit 2, nothing changed) when it does not, or did not, run ``components`` as
    ``revision`` has them, unless ``unpromoted`` (an emergency fix: said). ``source_read``: that environment, when
    already read. When the app is among ``components`` and promoted, its image is the one the source runs or ran
    (:attr:`Promotion.image`)."""
    source = environment.promote_from
    if not source or not components:
        return Promotion()
    found = source_read if source_read is not None else read_source(runtime, config, source)
    live = found.live
    why, earlier = promotion_of(config, found, components, revision, environment.name)
    image = None
    tag = earlier.get("app") or live.get("app")
    if "app" in components and "app" not in why and tag:
        image = planner.PromotedImage(source, tag, git.resolve_commit(config.root, tag) or tag)
    now = sorted(set(components) - set(why) - set(earlier))
    said = [f"✅ promoted from {source}: it runs {', '.join(now)} as this checkout has"] if now and not why else []
    said += [
        f"✅ promoted from {source}: it ran {component} as this checkout has at {sha}, in a run that passed there (it "
        f"runs {live.get(component) or 'none of it'} now)"
        for component, sha in sorted(earlier.items())
    ]
    if image:
        verb = "ran" if "app" in earlier else "runs"
        said.append(f"📦 the app's image is the one {source} {verb}, copied from there: {tag} (built once)")
    runtime.stderr.write("".join(line + "\n" for line in said))
    if not why:
        return Promotion(image=image)
    lines = "\n".join(f"  {component}: {reason}" for component, reason in why.items())
    if unpromoted:
        runtime.stderr.write(
            f"⚠️  deploying to {environment.name} what {source} does not run (--unpromoted; its history record says "
            f"so):\n{lines}\n"
        )
        return Promotion(tuple(why), image)
    raise UsageError(
        f"{environment.name} takes only what {source} runs (promote_from = {source!r}), and {source} does not run "
        f"this checkout's {', '.join(why)} (nor did any of its last {VERIFIED_RUNS} runs that passed):\n{lines}",
        next_step=f"deploy it to {source} first (inv deploy.auto --env {source}) and let it prove itself there, then "
        f"to {environment.name}; or check out what {source} runs. An emergency fix that cannot wait: --unpromoted",
    )
