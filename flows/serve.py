"""Scheduled batch deployments: a recipe that runs every night over a watched directory.

The deployment's parameters keep the inputs as the user wrote them (a directory or a glob, made
absolute), not as the files present today: every scheduled run expands them afresh, and the
batch flow skips inputs whose stores are already complete, so each night reconstructs only what
arrived since. `serve` keeps this process polling the Prefect server and runs the flow here when
a run is due; a work-pool deployment of the same flow is in deploy/prefect.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inversa.tasks.core.recipe import load_recipe

BATCH_ENTRYPOINT = "inversa.flows.batch:batch"
GLOB_CHARS = "*?["


class ServeError(ValueError):
    """A deployment that cannot be served as asked: names the option at fault and what was expected."""


@dataclass(frozen=True)
class ScheduledBatch:
    """Everything a served deployment needs, validated before anything talks to the server."""

    name: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    description: str = ""
    tags: list[str] = field(default_factory=list)


def absolute_input(pattern: str) -> str:
    """`pattern` made absolute; refuses a directory or glob base that does not exist (a typo would
    otherwise make every nightly run find nothing, silently)."""
    expanded = os.path.abspath(os.path.expanduser(pattern))
    if any(c in expanded for c in GLOB_CHARS):
        base = expanded[: min(expanded.index(c) for c in GLOB_CHARS if c in expanded)]
        base_dir = (base if base.endswith(os.sep) else os.path.dirname(base)).rstrip(os.sep) or os.sep
        if not os.path.isdir(base_dir):
            raise ServeError(f"--inputs {pattern!r}: the directory {base_dir} does not exist")
    elif not os.path.exists(expanded):
        raise ServeError(f"--inputs {pattern!r}: no such file or directory ({expanded})")
    return expanded


def validate_cron(cron: str, timezone: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        first = str(exc).splitlines()
        reason = first[-1].strip() if first else ""
        raise ServeError(
            f"--cron {cron!r} --timezone {timezone!r}: expected a 5-field cron expression such as '0 2 * * *' "
            f"(02:00 every day) and an IANA time zone such as 'Europe/Berlin' ({reason})"
        ) from None


def scheduled_batch(
    recipe: str,
    inputs: list[str],
    output: str,
    cron: str,
    name: str | None = None,
    overrides: list[str] | None = None,
    timezone: str = "UTC",
) -> ScheduledBatch:
    """Validate the recipe, inputs and schedule into the deployment to serve."""
    if not inputs:
        raise ServeError("--inputs: give at least one directory, file or glob to watch")
    parsed = load_recipe(recipe, overrides)
    # A deployment's parameters are JSON: the recipe's fields, without this command's paths.
    spec = parsed.with_fields(input=None, output=None).model_dump(mode="json")
    validate_cron(cron, timezone)
    out = Path(output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ServeError(f"--output {output!r}: expected a directory for the result stores, found a file")
    watched = [absolute_input(p) for p in inputs]
    return ScheduledBatch(
        name=name or parsed.name,
        cron=cron,
        timezone=timezone,
        parameters={"recipe": spec, "inputs": watched, "output": str(out)},
        description=f"{parsed.name} over {', '.join(watched)} into {out}; only inputs without a complete store",
        tags=["inversa", parsed.name],
    )


def load_entrypoint(entrypoint: str = BATCH_ENTRYPOINT):
    """The flow object behind `module:function`."""
    import importlib

    module, _, attribute = entrypoint.partition(":")
    return getattr(importlib.import_module(module), attribute)


def to_deployment(spec: ScheduledBatch, flow=None):
    """A Prefect runner deployment of `flow` (the batch flow by default) with a cron schedule.

    The entrypoint is the module path, not a file path, so the run loads the installed package
    whatever the working directory. One run at a time: a night's batch still running when the
    next one is due makes the next one wait instead of racing it for the same stores.
    """
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.types.entrypoint import EntrypointType

    flow = flow or load_entrypoint()
    return flow.to_deployment(
        name=spec.name,
        schedule=CronSchedule(cron=spec.cron, timezone=spec.timezone),
        parameters=spec.parameters,
        description=spec.description,
        tags=spec.tags,
        concurrency_limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def deployment_url(ui_url: str, deployment_id: Any) -> str:
    return f"{ui_url.rstrip('/')}/deployments/deployment/{deployment_id}"


def serve_forever(deployment, on_registered=None) -> None:
    """Register `deployment` and run its scheduled runs in this process until interrupted.

    `on_registered(deployment_id)` is called once the server knows the deployment, before the
    first poll, so the caller can print where to find it. Schedules are paused on shutdown: with
    no process left to run them, runs would pile up as late.
    """
    import asyncio

    from prefect.runner import Runner

    runner = Runner(name=f"inversa-serve-{deployment.name}", pause_on_shutdown=True, limit=1)
    deployment_id = runner.add_deployment(deployment)
    if on_registered:
        on_registered(deployment_id)
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass
