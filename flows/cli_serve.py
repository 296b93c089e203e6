"""`inversa serve RECIPE --cron ... --inputs ... --output ...`: a scheduled batch on the Prefect server."""

from __future__ import annotations

import argparse
import os

from inversa.flows import server
from inversa.flows.serve import ServeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (see recipes/)")
    parser.add_argument("--cron", required=True, help="when to run, as a cron expression, e.g. '0 2 * * *' (02:00 daily)")
    parser.add_argument("--timezone", default="UTC", help="IANA time zone of --cron (default UTC), e.g. Europe/Berlin")
    parser.add_argument("--inputs", action="append", required=True, metavar="DIR_OR_GLOB",
                        help="directory, file or glob to watch (repeatable); expanded afresh by every run")
    parser.add_argument("--output", required=True, help="directory for the result stores (one per input)")
    parser.add_argument("--name", help="deployment name (default: the recipe's name)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a recipe field by dotted path, e.g. method.params.max_iter=200")


def _require_server(url: str | None) -> str:
    """The API URL to register with; serving into Prefect's throwaway ephemeral API would schedule nothing."""
    if not url:
        raise ServeError(
            "inversa serve needs a running Prefect server to hold the schedule: start one with "
            "`inversa server start` (or set PREFECT_API_URL to an existing server)"
        )
    if not server.is_healthy(url.rstrip("/").removesuffix("/api")):
        raise ServeError(f"the Prefect server at PREFECT_API_URL={url} does not answer; is it running?")
    return url


def run(args: argparse.Namespace) -> int:
    url = server.use_running_server()  # before anything imports Prefect, which reads its settings once
    from inversa.flows.serve import deployment_url, scheduled_batch, serve_forever, to_deployment

    spec = scheduled_batch(args.recipe, args.inputs, args.output, args.cron, name=args.name,
                           overrides=args.set, timezone=args.timezone)
    api_url = _require_server(url)
    from prefect.settings import PREFECT_UI_URL

    ui_url = PREFECT_UI_URL.value() or api_url.removesuffix("/api")
    deployment = to_deployment(spec)

    def registered(deployment_id) -> None:
        print(f"deployment {deployment.flow_name}/{deployment.name}  ({deployment_id})", flush=True)
        print(f"schedule   {spec.cron} ({spec.timezone}); watching {', '.join(spec.parameters['inputs'])}", flush=True)
        print(f"output     {spec.parameters['output']}", flush=True)
        print(f"UI         {deployment_url(ui_url, deployment_id)}", flush=True)
        print(f"run now    prefect deployment run '{deployment.flow_name}/{deployment.name}'"
              f"   (with PREFECT_API_URL={api_url})", flush=True)
        print("serving    until Ctrl-C (the schedule is paused when this stops)", flush=True)

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    serve_forever(deployment, on_registered=registered)
    return 0
