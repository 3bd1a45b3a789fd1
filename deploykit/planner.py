"""Planners: (git revision, environment, configuration) → :class:`~deploykit.plan.Plan`.

Planning only reads; every input of every step is resolved here and written into the step.
"""

from __future__ import annotations

from collections.abc import Sequence

from deploykit.app_chain import (
    BuildImage,
    EnsureBaseImage,
    PushImage,
    RegisterTaskDef,
    RollService,
    WaitHealthy,
)
from deploykit.config import Config, EnvConfig
from deploykit.errors import UsageError
from deploykit.git import Revision
from deploykit.plan import Plan, Step

APP_STAGES = ("build", "push", "register-taskdef", "roll-service", "wait-healthy")


def needs_repository(stages: Sequence[str]) -> bool:
    """Whether the stages need the repository URI (everything after build does)."""
    return any(stage != "build" for stage in stages)


def local_image(env: EnvConfig, revision: Revision) -> str:
    return f"{env.repository}:{revision.tag}"


def base_image_plan(config: Config, env: EnvConfig, *, image: str | None = None, force: bool = False) -> Plan:
    """Ensure ``image`` (default: the local base of [build.base]) is on the Docker engine."""
    step = EnsureBaseImage(
        image=image or config.build.base.name,
        spec=config.build.base,
        extra_ca_dir=config.build.extra_ca_dir,
        force=force,
    )
    return Plan(env.name, (step,), "base-image")


def app_chain_plan(
    config: Config,
    env: EnvConfig,
    revision: Revision,
    stages: Sequence[str],
    *,
    repository_uri: str | None,
    title: str | None = None,
) -> Plan:
    """The steps of the app chain ``stages`` (a subset of APP_STAGES, in chain order)."""
    unknown = [s for s in stages if s not in APP_STAGES]
    if unknown:
        raise UsageError(f"unknown app-chain stage(s): {', '.join(unknown)}", next_step=f"use: {', '.join(APP_STAGES)}")
    if needs_repository(stages) and not repository_uri:
        raise ValueError("repository_uri is needed for stages after build")
    image = f"{repository_uri}:{revision.tag}"
    steps: list[Step] = []
    for stage in sorted(stages, key=APP_STAGES.index):
        if stage == "build":
            steps += base_image_plan(config, env, image=config.base_image_for(env)).steps
            steps.append(
                BuildImage(
                    context=str(config.root / config.build.context),
                    dockerfile=config.build.dockerfile,
                    image=local_image(env, revision),
                    base_image=config.base_image_for(env),
                    git_sha=revision.sha if not revision.dirty else revision.tag,
                    extra_ca_dir=config.build.extra_ca_dir,
                )
            )
        elif stage == "push":
            steps.append(PushImage(local_image(env, revision), str(repository_uri), revision.tag))
        elif stage == "register-taskdef":
            steps.append(
                RegisterTaskDef(
                    env.cluster,
                    env.service,
                    env.container,
                    str(repository_uri),
                    revision.tag,
                    revision.sha if not revision.dirty else revision.tag,
                )
            )
        elif stage == "roll-service":
            steps.append(RollService(env.cluster, env.service, env.container, image))
        elif stage == "wait-healthy":
            steps.append(
                WaitHealthy(env.cluster, env.service, env.container, image, env.wait_timeout, env.poll_seconds)
            )
    return Plan(env.name, tuple(steps), title or " → ".join(stages))
