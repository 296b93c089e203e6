"""The `inversa` command line.

Every command validates before it computes and exits non-zero with one clear line when
something is wrong (no traceback for a user's mistake); `--debug` shows the traceback.
Modules that import Prefect are imported inside the commands that run flows: Prefect reads its
settings once, at import, and `main` sets them first (and `check` and `show` never pay for it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from inversa.data.store import ResultStore, StoreConflict
from inversa.data.store_lock import check_unlocked
from inversa.flows import cli_batch, cli_field_study, cli_serve, cli_server
from inversa.flows.ephemeral_server import tie_ephemeral_server
from inversa.flows.quiet_errors import quiet_user_tracebacks
from inversa.flows.runtime import local_run_settings
from inversa.flows.server import use_running_server
from inversa.flows.terminal import region_bar, training_bar
from inversa.flows.task_runners import LocalCallback, add_runner_arguments, make_task_runner, runner_from
from inversa.tasks.core.devices import resolve_device
from inversa.tasks.core.calibration_plot import calibration_record, save_calibration_png
from inversa.tasks.core.previews import write_preview_png
from inversa.tasks.core.prior_recipe import load_prior_recipe
from inversa.tasks.core.recipe import load_recipe, recipes_taking
from inversa.tasks.core.limits import human_bytes
from inversa.tasks.core.stores import check_output, make_plan
from inversa.tasks.core.training import check_run_directory
from inversa.tasks.kinds import kind_of, kind_of_provenance


def _quiet_prefect_defaults() -> None:
    """No network from Prefect on a laptop or CI; set before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


EXAMPLES = {
    "demo": "inversa demo --output ./inversa-demo",
    "run": (
        "inversa run htc2022-limited --input ../shared/data/ct/htc2022/htc2022_ta_full.mat \\\n"
        "    --output ta-60.zarr --set angular_range_deg=60 --set start_angle_deg=0"
    ),
    "check": "inversa check ct-tv --input study.nc --set method.params.max_iter=300",
    "show": "inversa show ta-60.zarr --json   |   inversa show ta-60.zarr --png ta-60.png",
    "train-prior": "inversa train-prior prior-htc-discs --output priors/htc-discs-64 --steps 500",
    "batch": cli_batch.EXAMPLE,
    "server": "inversa server start   |   inversa server status   |   inversa server stop",
    "serve": "inversa serve ct-fbp --cron '0 2 * * *' --inputs /data/scans --output /data/recon",
    "field-study": cli_field_study.EXAMPLE,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inversa",
        description="Uncertainty-aware reconstruction pipelines (CT sinograms and sparse PDE field observations).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=f"Example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return p

    demo = add("demo", "Simulate a small limited-angle CT study and reconstruct it with several methods.")
    demo.add_argument("--output", default="inversa-demo", help="directory for the study and stores")
    demo.add_argument("--verbose", action="store_true", help="show Prefect's logs")

    def recipe_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (see recipes/)")
        p.add_argument("--input", help="measurement file (overrides the recipe's input)")
        p.add_argument("--output", help="result store path (overrides the recipe's output)")
        p.add_argument("--reference", help="reference image or segmentation for metrics")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set a recipe field by dotted path, e.g. method.params.max_iter=200")

    run = add("run", "Run a recipe through the reconstruct flow into a zarr store.")
    recipe_args(run)
    run.add_argument("--overwrite", action="store_true", help="replace a store written by another run")
    add_runner_arguments(run)

    check = add("check", "Validate a recipe and its input and print the plan; writes nothing.")
    recipe_args(check)
    check.add_argument("--json", action="store_true", help="print the plan as JSON")

    train = add("train-prior", "Train a diffusion prior from a prior recipe; rerun the same command to resume.")
    train.add_argument("recipe", help="a prior recipe file, or the name of a shipped one (e.g. prior-htc-discs)")
    train.add_argument("--output", help="run directory (overrides the recipe's output)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set a recipe field by dotted path, e.g. training.steps=2000")
    train.add_argument("--steps", type=int, metavar="N",
                       help="stop once N steps are complete (checkpointed; rerun to continue)")
    train.add_argument("--overwrite", action="store_true",
                       help="start afresh in a directory holding another recipe's run, a finished run or a prior "
                            "without its resumable checkpoint (refused otherwise)")

    cli_batch.add_arguments(add("batch", "Run one recipe over many inputs, one store per dataset; reruns skip finished ones."))

    show = add("show", "Summarise a result store: variables, metrics, provenance.")
    show.add_argument("store")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.add_argument("--png", metavar="FILE", help="write a preview of a slice as PNG (mean, std; with a reference the error and "
                           "where it falls outside the interval); a calibrated run's calibration plot "
                           "goes beside it as <stem>-calibration.png")
    show.add_argument("--slice", type=int, default=0, help="slice (or a field's time step) for --png (default 0)")

    cli_server.add_arguments(add("server", "Start, stop or check the local Prefect server (API and UI) in the background."))
    cli_serve.add_arguments(add("serve", "Serve a recipe as a scheduled batch deployment on the Prefect server."))
    cli_field_study.add_arguments(add("field-study", "Simulate a PDE field study (Darcy or heat) with its exact truth."))
    return parser


def cmd_check(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.set, input=args.input, output=args.output, reference=args.reference)
    plan = make_plan(recipe)
    if args.json:
        print(json.dumps({"recipe": recipe.model_dump(), "recipe_digest": recipe.digest(), "plan": plan.as_dict()},
                         indent=2, default=str))
        return 0
    print(f"recipe     {recipe.name}  ({recipe.digest()[:19]})")
    for line in kind_of(recipe).describe(recipe, plan):
        print(line)
    print(f"memory     about {human_bytes(plan.estimated_memory_bytes)} per worker")
    print(f"storage    at most {human_bytes(plan.estimated_storage_bytes)} (before compression)")
    print(f"output     {plan.output or '(none given: pass --output to run)'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.set, input=args.input, output=args.output, reference=args.reference)
    if not recipe.output:
        raise ValueError(f"recipe {recipe.name!r}: no output store; give one with --output STORE")
    check_unlocked(recipe.output)  # another run writes this store: refuse before Prefect starts
    make_plan(recipe)  # fail on a bad input before Prefect starts
    check_output(recipe, recipe.digest(), args.overwrite)
    from inversa.flows import reconstruct as module

    runner = make_task_runner(runner_from(args, recipe.runner.model_dump() if recipe.runner else None))
    hook, bar = region_bar()
    module.progress_hook = LocalCallback(hook)
    try:
        with local_run_settings():
            result = module.reconstruct.with_options(task_runner=runner)(recipe, overwrite=args.overwrite)
    finally:
        bar.stop()
        module.progress_hook = None
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    recipe = load_prior_recipe(args.recipe, args.set, output=args.output)
    if not recipe.output:
        raise ValueError(f"prior recipe {recipe.name!r}: no output directory; give one with --output DIR")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: expected a positive number of steps")
    resolve_device(recipe.device)  # fail on a missing GPU before Prefect starts
    check_run_directory(recipe, recipe.output, overwrite=args.overwrite)  # and on a directory it must not replace
    from inversa.flows import train_prior as module

    hook, bar = training_bar()
    module.progress_hook = hook
    try:
        with local_run_settings():
            result = module.train_prior(recipe, output=recipe.output, steps=args.steps, overwrite=args.overwrite)
    finally:
        bar.stop()
        module.progress_hook = None
    prior = Path(result["prior"]).resolve()
    done, total = result["completed_steps"], result["total_steps"]
    print(f"prior      {prior}")
    print(f"steps      {done} of {total}; mean loss over the last chunk {result['final_loss']:.4g}")
    if done < total:
        again = "without --steps (or with a larger one)" if args.steps else "the same command"
        print(f"resume     rerun {again} to train the remaining {total - done} steps")
    recipes = recipes_taking(prior)
    if recipes:
        print(f"use it     inversa run {recipes[0]} --input STUDY --output OUT.zarr --set method.params.prior={prior}")
        if len(recipes) > 1:
            print(f"           (or method.params.prior in {', '.join(recipes[1:])})")
    print(f"           python: from inversa.tasks.core.priors import load_prior; prior = load_prior({str(prior)!r})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = ResultStore.open(args.store)
    ds = store.to_xarray()
    damaged = store.damaged_regions()
    doc = {
        "store": str(store.path),
        "dims": {k: int(v) for k, v in ds.sizes.items()},
        "variables": {
            str(k): {"dims": list(v.dims), "dtype": str(v.dtype), "shape": list(v.shape)} for k, v in ds.data_vars.items()
        },
        "credible_level": store.credible_level,
        "regions": {"total": len(store.regions), "done": len(store.intact_regions()),
                    "damaged": {str(i): why for i, why in damaged.items()}},
        "metrics": store.summary,
        "provenance": store.provenance,
    }
    if args.png:
        preview = kind_of_provenance(store.provenance).preview(store, args.slice)
        doc["png"] = str(write_preview_png(preview, args.png).resolve())
        record = calibration_record(store)
        if record is not None:
            png = Path(args.png)
            doc["calibration_png"] = str(save_calibration_png(record, png.with_name(f"{png.stem}-calibration.png")).resolve())
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 1 if damaged else 0
    print(f"store        {doc['store']}")
    print(f"dims         {doc['dims']}")
    for name, v in doc["variables"].items():
        print(f"  {name:<16} {tuple(v['dims'])} {v['dtype']}")
    print(f"regions      {doc['regions']['done']}/{doc['regions']['total']} done"
          + (f", {len(damaged)} damaged" if damaged else ""))
    for index, why in damaged.items():
        start, stop = store.regions[index]
        print(f"  damaged    region {index} ({store.layout.leading_dim} {start}-{stop - 1}): {why}")
    if damaged:
        print("             rerun the command that wrote this store to recompute the damaged regions")
    prov = doc["provenance"]
    print(f"method       {prov.get('method')} {prov.get('method_params')}")
    print(f"input        {prov.get('input')} ({str(prov.get('input_digest'))[:19]})")
    print(f"recipe       {prov.get('recipe', {}).get('name')} ({str(prov.get('recipe_digest'))[:19]})")
    for key, value in (doc["metrics"] or {}).items():
        print(f"  {key:<14} {value}")
    if "png" in doc:
        print(f"preview      {doc['png']}")
    if "calibration_png" in doc:
        print(f"calibration  {doc['calibration_png']}")
    return 1 if damaged else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from inversa.flows.demo import run_demo  # quiet unless --verbose: `main` set the log level

    with local_run_settings():
        run_demo(Path(args.output))
    return 0


COMMANDS = {"demo": cmd_demo, "run": cmd_run, "check": cmd_check, "show": cmd_show, "train-prior": cmd_train_prior,
            "batch": cli_batch.run, "server": cli_server.run, "serve": cli_serve.run,
            "field-study": cli_field_study.run}


MAX_MESSAGE = 8000


def one_line(message: str) -> str:
    """The message on one line; only a message longer than ``MAX_MESSAGE`` loses its middle, so
    a long path at either end (where the file is named) survives whole."""
    text = " ".join(message.split())
    if len(text) <= MAX_MESSAGE:
        return text
    keep = MAX_MESSAGE // 2
    return f"{text[:keep]} ... ({len(text) - 2 * keep} characters left out) ... {text[-keep:]}"


FLOW_COMMANDS = frozenset({"demo", "run", "train-prior", "batch", "serve", "field-study"})


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM outside a flow run ends like Ctrl-C: cleanly, servers stopped


def main(argv: list[str] | None = None) -> int:
    _quiet_prefect_defaults()
    if "prefect" not in sys.modules:  # Prefect reads its settings once, at import
        use_running_server()  # runs show up in `inversa server`'s UI when one is running
    args = _parser().parse_args(argv)
    previous = None
    if args.command == "demo" and not args.verbose:  # before Prefect is imported: it reads this once
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if args.command in FLOW_COMMANDS:
        tie_ephemeral_server()  # a temporary server ignores the terminal's Ctrl-C and dies with us
        quiet_user_tracebacks()  # Prefect's logs: one line for a user's mistake, a traceback for a bug
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_command(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_command(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for the user, traceback on --debug
        if args.debug:
            raise
        message = one_line(str(exc)) or type(exc).__name__
        print(f"inversa {args.command}: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, (ValueError, FileNotFoundError, StoreConflict)) else 1
    except BaseException as exc:
        if type(exc).__name__ != "TerminationSignal":  # Prefect's SIGTERM inside a flow run
            raise
        print("terminated; rerun the same command to resume", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
