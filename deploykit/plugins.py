"""The plugin manager: built-in and external plugins alike come from the entry-point group ``deploykit``, each a
module or an object with hook functions, or a class (made once per manager: no instance shared at import).

``DEPLOYKIT_BLOCK_PLUGINS=name,other`` blocks plugins by their entry-point name. A plugin that fails to
import is reported by name and does not take the others down; a plugin implementing a hook that does not
exist (a misspelt ``deploykit_*`` function) is a UsageError naming it.
"""

from __future__ import annotations

import copy
import difflib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import pluggy

from deploykit import hookspecs
from deploykit.errors import ConfigError, UsageError
from deploykit.output import stdout_aside

if TYPE_CHECKING:
    from deploykit.config import Config, EnvConfig

GROUP = "deploykit"
BLOCK_ENV = "DEPLOYKIT_BLOCK_PLUGINS"


@dataclass
class Plugins:
    """The manager and what went wrong while loading (plugin name → error)."""

    manager: pluggy.PluginManager
    broken: dict[str, str] = field(default_factory=dict)
    blocked: tuple[str, ...] = ()


def blocked_names(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    value = (environ if environ is not None else dict(os.environ)).get(BLOCK_ENV, "")
    return tuple(sorted({name.strip() for name in value.split(",") if name.strip()}))


def get_plugin_manager(
    *,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    extra: Iterable[tuple[str, object]] = (),
    environ: dict[str, str] | None = None,
) -> Plugins:
    """A fresh manager (no import-time global) with the hookspecs and every plugin that loads.

    ``entry_points`` defaults to the installed ones of the group; ``extra`` registers (name, plugin) pairs
    the same way (tests, and plugins given on the command line).
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    blocked = blocked_names(environ)
    for name in blocked:
        manager.set_blocked(name)
    plugins = Plugins(manager, blocked=blocked)
    found = importlib.metadata.entry_points(group=GROUP) if entry_points is None else entry_points
    candidates: list[tuple[str, object | None]] = []
    named: dict[str, str] = {}  # entry point name → what it names
    for entry_point in sorted(found, key=lambda ep: ep.name):
        if entry_point.name in blocked:
            continue
        if named.setdefault(entry_point.name, entry_point.value) != entry_point.value:
            _refuse_same_name(entry_point.name, named[entry_point.name], entry_point.value)
        if any(name == entry_point.name for name, _ in candidates) or entry_point.name in plugins.broken:
            continue  # the same plugin listed twice (two copies of a distribution's metadata on the path)
        try:
            loaded = entry_point.load()
            # a class: one fresh instance per manager (its state, a notifier's queue, is not shared between them)
            candidates.append((entry_point.name, loaded() if isinstance(loaded, type) else loaded))
        except Exception as exc:  # a broken plugin is reported, the others still load
            plugins.broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
    candidates += [(name, plugin) for name, plugin in extra if name not in blocked]
    for name, plugin in candidates:
        if manager.is_registered(plugin) or manager.get_plugin(name) is not None:
            continue
        _refuse_unmarked(manager, name, plugin)
        try:
            manager.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a hook's argument the hook does not have
            raise UsageError(
                f"plugin {name!r} cannot be loaded: {exc}",
                next_step=f"take only the hook's own arguments (README, 'Writing check plugins'), or block it: "
                f"{BLOCK_ENV}={name}",
            ) from None
        _refuse_idle(manager, name, plugin)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise UsageError(
            f"plugin {name!r} implements a hook deploykit does not have: {exc}",
            next_step=f"fix the hook's name (see README, 'Writing check plugins'), or block it: {BLOCK_ENV}={name}",
        ) from None
    return plugins


def _refuse_same_name(name: str, one: str, other: str) -> None:
    """Two installed plugins of one entry-point name (a team's ``notify`` beside the built-in): one of them would be
    left out, which depending on the order the path lists them, and unsaid."""
    raise UsageError(
        f"two plugins are named {name!r} (entry points of the group {GROUP}: {one} and {other}): one would be left "
        "out, unsaid",
        next_step=f"rename the team's entry point (its pyproject.toml, [project.entry-points.{GROUP}]) and its "
        f"[plugins.{name}] table of deploy.toml; a built-in's name is taken",
    )


def each_plugin(plugins: Plugins, hook: str, **kwargs: Any) -> list[tuple[str, Callable[[], Any]]]:
    """Each plugin's ``hook`` (wrappers left out), in the order the plugins loaded, as (the plugin's name, a call of
    it with those of ``kwargs`` it takes): for asking each plugin on its own, so that one that raises is told apart
    from the others (pluggy's own hook call stops at the first that raises). Each call gets its own copy of what is
    mutable (:func:`own_copies`)."""
    return [
        (impl.plugin_name, partial(_called, impl.function, impl.argnames, kwargs))
        for impl in getattr(plugins.manager.hook, hook).get_hookimpls()
        if not (impl.hookwrapper or impl.wrapper)
    ]


def _called(function: Callable[..., Any], argnames: Sequence[str], kwargs: Mapping[str, Any]) -> Any:
    given = own_copies({name: kwargs[name] for name in argnames})
    return function(*(given[name] for name in argnames))


def _refuse_unmarked(manager: pluggy.PluginManager, name: str, plugin: object) -> None:
    """A ``deploykit_*`` function of ``plugin`` without ``@hookimpl`` is never called (pluggy looks at marked ones
    only): refused, naming it, as a misspelt hook is."""
    unmarked = sorted(
        attr
        for attr in dir(plugin)
        if attr.startswith(f"{hookspecs.PROJECT}_")
        and callable(getattr(plugin, attr, None))
        and manager.parse_hookimpl_opts(plugin, attr) is None
    )
    if unmarked:
        raise UsageError(
            f"plugin {name!r} defines {', '.join(f'{attr}()' for attr in unmarked)} without @hookimpl: deploykit "
            "would never call it",
            next_step="mark it: from deploykit.hookspecs import hookimpl, then @hookimpl above the def (README, "
            f"'Writing check plugins'); or block the plugin: {BLOCK_ENV}={name}",
        )


def _refuse_idle(manager: pluggy.PluginManager, name: str, plugin: object) -> None:
    """A plugin that implements no hook (its hooks misspelt and unmarked, ``deploykt_register_checks``; the entry point
    naming its module where its class holds the hooks) adds nothing, unsaid: refused, naming what looks meant."""
    if manager.get_hookcallers(plugin):
        return
    hooks = sorted(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))
    near = sorted({m for attr in dir(plugin) for m in difflib.get_close_matches(attr, hooks, n=1, cutoff=0.8)})
    # read without running anything of the plugin's (a property of one about to be refused may raise)
    classes = sorted(
        a for a in dir(plugin) if isinstance(held := inspect.getattr_static(plugin, a, None), type) and _has_hooks(held)
    )
    hint = f" (close to {', '.join(near)}?)" if near else f" ({', '.join(classes)} holds them?)" if classes else ""
    raise UsageError(
        f"plugin {name!r} implements no hook of deploykit's{hint}: it would add nothing",
        next_step="name its hooks as README's 'Writing check plugins' does, each marked @hookimpl; an entry point "
        f"names the class that holds them (module:Class); or block the plugin: {BLOCK_ENV}={name}",
    )


def _has_hooks(cls: type) -> bool:
    """Whether ``cls`` defines a ``deploykit_*`` method (a plugin class its module's entry point did not name)."""
    return any(attr.startswith(f"{hookspecs.PROJECT}_") for attr in vars(cls))


def installed_names(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The names of the plugins installed (the entry points of the group) and of those blocked, without loading any:
    the names a [plugins.NAME] table of deploy.toml may have."""
    found = {entry_point.name for entry_point in importlib.metadata.entry_points(group=GROUP)}
    return tuple(sorted(found | set(blocked_names(environ))))


def check_tables(config: Config, known: Iterable[str]) -> None:
    """Each [plugins.NAME] table of deploy.toml is for a plugin ``known`` (loaded, broken or blocked): a misspelt
    name would leave the plugin without its settings, and so off (a chat told nothing), and say nothing."""
    names = sorted(set(known))
    for table in sorted(config.plugins):
        if table in names:
            continue
        close = difflib.get_close_matches(table, names, n=1)
        raise ConfigError(
            f"{config.path}: [plugins.{table}] is for no plugin installed here"
            + (f" (did you mean [plugins.{close[0]}]?)" if close else f" (installed: {', '.join(names) or 'none'})"),
            next_step=f"rename the table in {config.path.name}, or install the plugin (README, 'Writing check "
            f"plugins': its entry point in the group deploykit), or where it is not installed (a CI job) block it: "
            f"{BLOCK_ENV}={table}",
        )


def configure_plugins(plugins: Plugins, config: Config) -> None:
    """Give each plugin the loaded ``config`` (``deploykit_configure``), each on its own, in the order they loaded: a
    settings error it raises (ConfigError) names the plugin and its table; anything else it raises is a UsageError
    naming the plugin too (exit 2, nothing has run yet), not a traceback."""
    for name, configure in each_plugin(plugins, "deploykit_configure", config=config):
        try:
            configure()
        except UsageError as exc:
            if f"[plugins.{name}]" not in exc.message:
                exc.message = f"[plugins.{name}] of {config.path}: {exc.message}"
            exc.message = f"plugin {name!r}: {exc.message}"
            exc.next_step = exc.next_step or f"fix [plugins.{name}] in {config.path.name}"
            raise
        except Exception as exc:  # the plugin's own bug: named, with the way out
            raise UsageError(
                f"plugin {name!r} failed in deploykit_configure: {type(exc).__name__}: {exc}",
                next_step=f"fix the plugin (or its [plugins.{name}] settings), or block it: {BLOCK_ENV}={name}",
            ) from exc


def review_stack_changes(
    plugins: Plugins | None, env: EnvConfig, stack: str, changes: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """What each plugin implementing ``deploykit_review_stack_changes`` refuses in ``stack``'s ``changes`` (plugin name
    → its reasons; none: nothing refused). Each is asked on its own; one that raises refuses, with what it raised: a
    team's rule that cannot be checked does not let the change through."""
    if plugins is None:
        return {}
    refused: dict[str, list[str]] = {}
    for impl in reversed(plugins.manager.hook.deploykit_review_stack_changes.get_hookimpls()):
        given = {"env": env, "stack": stack, "changes": copy.deepcopy([dict(c) for c in changes])}
        try:
            reasons = impl.function(*(given[name] for name in impl.argnames))
        except Exception as exc:  # any failure of a team's rule refuses, named
            reasons = [f"the review failed: {type(exc).__name__}: {exc}"]
        if reasons is None:
            reasons = []
        elif not isinstance(reasons, list | tuple):
            reasons = [f"the review returned {type(reasons).__name__}, not a list of reasons"]
        listed = [str(r) for r in reasons if str(r).strip()]
        if listed:
            refused[impl.plugin_name] = listed
    return refused


def refusal_text(refused: Mapping[str, Sequence[str]]) -> str:
    """``team_checks: reason; other reason``, each plugin once."""
    return "; ".join(f"{name}: {'; '.join(reasons)}" for name, reasons in sorted(refused.items()))


def observe(plugins: Plugins | None, hook: str, say: Callable[[str], object], **kwargs: Any) -> None:
    """Tell every plugin's ``hook`` (an observer's: deployment started, finished...), each on its own: one that
    raises (``sys.exit`` included) is said on ``say``, by name, and the others still hear it; an observer never fails
    what it observes. Each is given its own copy of what is mutable (a report, :func:`each_plugin`): one that changes
    it does not change what the others hear. What a plugin prints goes to stderr (:func:`stdout_aside`)."""
    if plugins is None:
        return
    for name, tell in reversed(each_plugin(plugins, hook, **kwargs)):  # as pluggy calls them: the last loaded first
        try:
            with stdout_aside():
                tell()
        except (Exception, SystemExit) as exc:  # whatever a plugin raises: the others still hear it, nothing fails
            say(
                f"⚠️  plugin {name!r} failed in {hook}: {type(exc).__name__}: {cut(str(exc))}\n"
                f"    → next: fix the plugin, or block it: {BLOCK_ENV}={name}"
            )


SAID_AT_MOST = 500  # characters of what a plugin raised, said (a response body in a message: said once, not whole)


def cut(text: str, most: int = SAID_AT_MOST) -> str:
    """``text``, at most ``most`` characters of it (with how many more there were)."""
    return text if len(text) <= most else f"{text[:most]}… ({len(text) - most} more characters)"


def own_copies(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each dict or list deep-copied: what one plugin is given, no other plugin (nor deploykit) sees
    changed."""
    return {key: copy.deepcopy(value) if isinstance(value, dict | list) else value for key, value in kwargs.items()}
