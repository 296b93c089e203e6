"""`inversa batch RECIPE INPUTS... --output DIR`: one recipe over many inputs, one store each.

Exit status 0 when every dataset is done, resumed or skipped; 1 when any failed (the others
are still written, and the table says which failed and why); 2 for a bad recipe or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inversa.flows.runtime import local_run_settings
from inversa.flows.terminal import region_bar
from inversa.flows.task_runners import LocalCallback, add_runner_arguments, make_task_runner, runner_from
from inversa.tasks.core.recipe import load_recipe
from inversa.tasks.kinds import kind_of

EXAMPLE = "inversa batch ct-tv scans/ 'more/*.nc' extra.h5 --output results/ --workers 2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (see recipes/)")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="measurement files, directories (every .nc .h5 .hdf5 .mat .npy .npz file and zarr directory in them, "
             "not recursive) or glob patterns (expanded by inversa, '**' recurses); X_truth.EXT next to X.EXT "
             "is X's reference",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="directory for the stores, DIR/<dataset>.zarr")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a recipe field by dotted path, e.g. method.params.max_iter=200")
    parser.add_argument("--overwrite", action="store_true", help="replace stores written by another recipe or input")
    parser.add_argument("--json", action="store_true", help="print the batch summary as JSON instead of a table")
    add_runner_arguments(parser)


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.set)  # a bad recipe fails here, before Prefect starts
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: exists and is not a directory; expected a directory for the stores")

    from inversa.flows import batch as module  # imports Prefect: after the CLI has set its settings

    runner = make_task_runner(runner_from(args, recipe.runner.model_dump() if recipe.runner else None))
    hook, bar = region_bar()
    module.progress_hook = LocalCallback(hook)  # the flow's globals travel to Dask workers: no lock in them
    failure = None
    try:
        with local_run_settings():
            result = module.batch.with_options(task_runner=runner)(
                recipe, [str(i) for i in args.inputs], str(output), overwrite=args.overwrite)
    except module.DatasetsFailed as exc:
        failure = exc
        result = json.loads((output / module.SUMMARY_FILE).read_text())
    finally:
        bar.stop()
        module.progress_hook = None
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(module.batch_table(result["datasets"], kind_of(recipe).table_metrics))
        counts = ", ".join(f"{n} {s}" for s, n in result["counts"].items() if n)
        print(f"\n{counts} in {result['wall_seconds']:.1f} s; summary {output / module.SUMMARY_FILE}")
    if failure is not None:
        print(f"inversa batch: {failure}", file=sys.stderr)
        return 1
    return 0


def print_table(rows: list[dict[str, str]]) -> None:
    """Columns as wide as their widest cell; the reason column last, unpadded."""
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) if c != columns[-1] else c for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) if c != columns[-1] else str(row[c]) for c in columns).rstrip())
