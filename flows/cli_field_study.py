"""`inversa field-study darcy|heat --output study.nc`: a synthetic field study with known truth.

Writes the sensors' observations as ``study.nc`` and the exact field beside it as
``study_truth.nc`` (the naming `inversa batch` pairs as a reference), so a field recipe can be
tried and scored end to end: ``inversa run darcy-pinn --input study.nc --reference study_truth.nc``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import yaml

from inversa.data.synthetic_fields import simulate_darcy_study, simulate_heat_study

STUDIES = ("darcy", "heat")
EXAMPLE = "inversa field-study darcy --output darcy.nc --set n_sensors=100 --set coefficient=constant"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", choices=STUDIES, help="which PDE study to simulate")
    parser.add_argument("--output", required=True, help="observations file (.nc); the truth goes to NAME_truth.nc")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword of the simulator, e.g. n_sensors=100, noise_sigma=0.01, seed=3")


def write_field_study(study: str, output: str | Path, settings: dict) -> tuple[Path, Path]:
    simulate = {"darcy": simulate_darcy_study, "heat": simulate_heat_study}[study]
    accepted = set(inspect.signature(simulate).parameters)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(f"field-study {study}: unknown setting(s) {unknown}; expected any of {sorted(accepted)}")
    observations, truth = simulate(**settings)
    output = Path(output)
    if output.suffix != ".nc":
        raise ValueError(f"{output}: --output must end in .nc")
    output.parent.mkdir(parents=True, exist_ok=True)
    truth_path = output.with_name(f"{output.stem}_truth.nc")
    observations.to_netcdf(output)
    truth.to_netcdf(truth_path)
    return output, truth_path


def run(args: argparse.Namespace) -> int:
    settings = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        settings[key.strip()] = yaml.safe_load(value) if value else ""
    observations, truth = write_field_study(args.study, args.output, settings)
    print(f"observations {observations}\ntruth        {truth}")
    return 0
