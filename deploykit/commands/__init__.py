"""The bodies of the invoke tasks: load the configuration, plan, then execute or describe.

``tasks.py`` only parses options and calls these; they raise :class:`~deploykit.errors.DeployKitError`
(with its exit code) and never call ``sys.exit`` themselves.

One module per kind of command, each importing only :mod:`~deploykit.commands.core` (and the few below it):

- ``core``: the runtime, loading the configuration and plugins, a plan run under the environment's lock (its
  confirmation, the pause's wake, the history record, the automatic rollback);
- ``views`` (endpoints, lookup, smoke, health, envs, history, report, unlock), ``freezing``, ``cleanup``;
- ``promotion`` (promote_from) and ``previews`` (a stack's change set shown), which the deploys use;
- ``deploys`` (the app chain, a stack, a Lambda function, the full deploy, a rollback, destroy), ``service`` (logs,
  run, tasks, scan, restart, pause, resume, invoke), and ``autodeploy`` (deploy.auto, its --watch, diff) above them all.
"""

from __future__ import annotations

from deploykit.commands.autodeploy import analyse, deploy_auto, deploy_watch, diff
from deploykit.commands.cleanup import images_cleanup, lambda_cleanup, taskdefs_cleanup
from deploykit.commands.core import (
    SUPERSEDED_RESTARTS,
    YES_ENV,
    Runtime,
    heard_when_not_run,
    live_record,
    load_plugins,
    run_plan,
    until_unlocked,
)
from deploykit.commands.deploys import (
    app_chain,
    base_image,
    current_code_keys,
    deploy_full,
    deploy_lambda,
    deploy_stack,
    destroy,
    lambda_check,
    rollback,
)
from deploykit.commands.freezing import freeze_env, unfreeze_env
from deploykit.commands.service import (
    invoke_function,
    logs,
    pause_app,
    restart_app,
    resume_app,
    run_command,
    scan_image,
    tasks_list,
)
from deploykit.commands.views import (
    alarms,
    deployment_report,
    endpoints,
    endpoints_if_deployed,
    envs,
    health_report,
    history_list,
    lookup,
    perf_report,
    smoke,
    unlock,
)

__all__ = [
    "SUPERSEDED_RESTARTS",
    "YES_ENV",
    "Runtime",
    "alarms",
    "analyse",
    "app_chain",
    "base_image",
    "current_code_keys",
    "deploy_auto",
    "deploy_full",
    "deploy_lambda",
    "deploy_stack",
    "deploy_watch",
    "deployment_report",
    "destroy",
    "diff",
    "endpoints",
    "endpoints_if_deployed",
    "envs",
    "freeze_env",
    "health_report",
    "heard_when_not_run",
    "history_list",
    "images_cleanup",
    "invoke_function",
    "lambda_check",
    "lambda_cleanup",
    "live_record",
    "load_plugins",
    "logs",
    "lookup",
    "pause_app",
    "perf_report",
    "restart_app",
    "resume_app",
    "rollback",
    "run_command",
    "run_plan",
    "scan_image",
    "smoke",
    "taskdefs_cleanup",
    "tasks_list",
    "unfreeze_env",
    "unlock",
    "until_unlocked",
]
