"""The train-prior flow and command: checkpoints, artifacts, exact resume, refusal of another recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import inversa.tasks.training_tasks as training_tasks
from inversa.data.checkpoints import load_checkpoint
from inversa.flows.cli import main
from inversa.tasks.core.prior_recipe import load_prior_recipe
from inversa.resources import priors_dir, recipes_dir
from inversa.tasks.core.methods import check_family
from inversa.tasks.core.recipe import RecipeError, load_recipe, recipes_taking
from inversa.flows.train_prior import chunks, train_prior
from inversa.models.priors.training import Trainer
from inversa.tasks.core.priors import resolve_prior_path
from inversa.tasks.core.priors import load_prior
from inversa.tasks.core.training import TrainingRun

TINY = {
    "name": "tiny-prior",
    "data": {"source": "phantoms", "kind": "htc-discs", "image_size": 16, "field_of_view_mm": 76.0, "supersample": 2},
    "normalisation": {"offset": 0.016, "scale": 0.032},
    "architecture": {"channels": [8, 16], "attention_levels": [1], "embedding": 32},
    "training": {"steps": 6, "batch_size": 2, "warmup": 2},
    "sampling": {"sigma_min": 0.002, "sigma_max": 40.0},
    "checkpoint_every": 2,
    "preview_every": 1,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(**changes):
    raw = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section][field] = value
        else:
            raw[section] = value
    return load_prior_recipe(raw)


def _ema(directory) -> dict[str, torch.Tensor]:
    arrays, _ = load_checkpoint(directory / "prior")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six steps in one run (three chunks from one cached TrainingRun): the reference weights."""
    directory = tmp_path_factory.mktemp("straight")
    result = train_prior(_recipe(), str(directory))
    return directory, result


@pytest.mark.parametrize("path", sorted(recipes_dir().glob("prior-*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_prior_recipe_validates(path):
    recipe = load_prior_recipe(path.stem)
    assert recipe.name == path.stem and recipe.checkpoint_every >= 1


def test_prior_recipe_overrides_and_typos():
    recipe = load_prior_recipe("prior-htc-discs", ["training.steps=20", "checkpoint_every=5"], output="x")
    assert recipe.training["steps"] == 20 and recipe.checkpoint_every == 5 and recipe.output == "x"
    with pytest.raises(RecipeError, match=r"prior-htc-discs\.yaml: invalid prior recipe: normalisation\.scale"):
        load_prior_recipe("prior-htc-discs", ["normalisation.scale=0"])
    with pytest.raises(RecipeError, match=r"data: PhantomImages: kind must be one of"):
        load_prior_recipe("prior-htc-discs", ["data.kind=dragons"])
    with pytest.raises(RecipeError, match=r"architecture.image_size 32 differs from the data's image_size 64"):
        load_prior_recipe("prior-htc-discs", ["architecture.image_size=32"])
    with pytest.raises(RecipeError, match=r"looks like a reconstruction recipe"):
        load_prior_recipe("ct-fbp")


def test_chunks_end_on_checkpoint_multiples():
    assert chunks(0, 6, 2) == [(0, 2), (2, 4), (4, 6)]
    assert chunks(3, 8, 4) == [(3, 4), (4, 8)]
    assert chunks(0, 5, 250) == [(0, 5)]
    assert chunks(6, 6, 2) == []


def test_flow_trains_writes_checkpoints_and_artifacts(straight):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    directory, result = straight
    for name in ("prior.json", "prior.safetensors", "last.json", "last.safetensors"):
        assert (directory / name).is_file(), name
    assert result["completed_steps"] == 6 and result["output"] == str(directory)
    assert result["prior"] == str(directory / "prior.json") and np.isfinite(result["final_loss"])
    prior = load_prior(result["prior"])
    assert prior.shape == (16, 16) and prior.pixel_size_mm == pytest.approx(76.0 / 16)
    # The prior file holds the EMA weights only; last also holds what resuming needs.
    assert {k.split(".")[0] for k in load_checkpoint(directory / "prior")[0]} == {"ema"}
    assert {k.split(".")[0] for k in load_checkpoint(directory / "last")[0]} == {"ema", "model", "optim"}

    run_id = result["flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        run = client.read_flow_run(run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert run.name == "train-prior | tiny-prior"
    assert {"steps 1-2", "steps 3-4", "steps 5-6"} <= {t.name for t in task_runs}
    artifacts = sorted(artifacts, key=lambda a: a.created)
    losses = [a for a in artifacts if a.type == "table" and a.key.endswith("-loss")]
    assert len(losses) == 4  # one per checkpoint, and the report's
    table = losses[-1].data if isinstance(losses[-1].data, list) else json.loads(losses[-1].data)
    assert [row["step"] for row in table] == [2, 4, 6]
    assert all(np.isfinite(row["loss"]) and row["seconds_per_step"] > 0 for row in table)
    previews = [a for a in artifacts if a.type == "markdown" and "data:image/png;base64," in a.data]
    # preview_every=1: after the checkpoints at steps 2 and 4, and the final report at 6.
    assert len(previews) == 3 and "step 6 of 6" in previews[-1].data
    progress = [a for a in artifacts if a.type == "progress"][-1]
    assert float(progress.data) == pytest.approx(100.0)


def test_one_network_per_process_across_chunks(tmp_path, monkeypatch):
    built = []

    class Counting(TrainingRun):
        def __init__(self, *args, **kwargs):
            built.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(training_tasks, "TrainingRun", Counting)
    training_tasks.forget_open_run()
    train_prior(_recipe(training__steps=4), str(tmp_path))
    assert len(built) == 1  # open, two chunks and the report share it


def test_resume_from_disk_equals_a_straight_run(straight, tmp_path):
    first = train_prior(_recipe(), str(tmp_path), steps=3)
    assert first["completed_steps"] == 3
    assert load_checkpoint(tmp_path / "last")[1]["completed_steps"] == 3
    training_tasks.forget_open_run()  # what a new process starts with
    second = train_prior(_recipe(), str(tmp_path), steps=6)
    assert second["completed_steps"] == 6
    # It continued at 3 (chunks 1-2, 3 | 4, 5-6) rather than starting over.
    assert [h["step"] for h in load_checkpoint(tmp_path / "last")[1]["history"]] == [2, 3, 4, 6]
    _assert_same_weights(_ema(tmp_path), _ema(straight[0]))
    assert second["final_loss"] == pytest.approx(straight[1]["final_loss"], rel=1e-6)


def test_crash_mid_step_then_rerun_equals_a_straight_run(straight, tmp_path, monkeypatch):
    real_step = Trainer.step

    def crashing(self, x0):
        k = self.completed
        loss = real_step(self, x0)
        if k == 4:  # the weights are updated, the step is not counted: the worst moment to die
            self.completed = k
            raise RuntimeError("simulated crash")
        return loss

    monkeypatch.setattr(Trainer, "step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_prior(_recipe(), str(tmp_path))
    # The process's run still says 4 steps, as the directory does, but its weights are not
    # those of step 4: only dropping it after the failure makes the rerun read the directory.
    assert load_checkpoint(tmp_path / "last")[1]["completed_steps"] == 4
    monkeypatch.setattr(Trainer, "step", real_step)

    result = train_prior(_recipe(), str(tmp_path))
    assert result["completed_steps"] == 6
    _assert_same_weights(_ema(tmp_path), _ema(straight[0]))


def test_rerun_of_a_finished_directory_only_reports(straight):
    directory, result = straight
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    again = train_prior(_recipe(), str(directory))
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before
    assert again["completed_steps"] == 6 and again["final_loss"] == result["final_loss"]


def test_another_recipe_is_refused_naming_the_directory(tmp_path, capsys):
    run = TrainingRun(_recipe(), tmp_path / "run")
    run.train(1)
    run.save()
    with pytest.raises(ValueError, match=r"run/last\.json: this directory holds a training run of another recipe"):
        train_prior(_recipe(training__seed=1), str(tmp_path / "run"))
    recipe_file = tmp_path / "other.yaml"
    recipe_file.write_text(yaml.safe_dump({**TINY, "training": {**TINY["training"], "lr": 0.01}}))
    code = main(["train-prior", str(recipe_file), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "run") in err and "another recipe" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_trains_and_says_where_the_prior_is(tmp_path, capsys):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "cli-run"
    code = main(["train-prior", str(recipe_file), "--output", str(out), "--set", "training.steps=4", "--steps", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert str(out / "prior.json") in printed and "2 of 4" in printed and "rerun without --steps" in printed
    assert load_checkpoint(out / "prior")[1]["completed_steps"] == 2
    # The path it prints is one a diffusion recipe's method.params.prior accepts.
    line = next(l for l in printed.splitlines() if "method.params.prior=" in l)
    assert resolve_prior_path(line.split("method.params.prior=")[1].split()[0]) == out / "prior"


@pytest.mark.parametrize("argv, expected", [
    (["--set", "training.stpes=4"], "unknown keys ['stpes']"),
    (["--set", "architecture.channels=[8,12]"], "divisible by groups"),
    (["--set", "checkpoint_evry=3"], "checkpoint_evry: Extra inputs are not permitted"),
    (["--steps", "0"], "--steps 0"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, expected):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(TINY))
    code = main(["train-prior", str(recipe_file), "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("inversa train-prior: error:") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_complex_image_set_in_zarr_trains_a_two_channel_prior_that_serves_any_matrix(tmp_path):
    import zarr

    rng = np.random.default_rng(0)
    images = zarr.open_group(str(tmp_path / "mine.zarr"), mode="w")
    values = (rng.random((8, 16, 16)) * np.exp(1j * rng.random((8, 16, 16)))).astype(np.complex64)
    images.create_array("images", shape=values.shape, dtype=values.dtype)[:] = values
    recipe = load_prior_recipe({**TINY, "data": {"source": "zarr", "path": str(tmp_path / "mine.zarr")},
                                "normalisation": {"offset": 0.0, "scale": 2.0}, "training": {**TINY["training"], "steps": 2}})
    run = TrainingRun(recipe, tmp_path / "run")
    run.train(2)
    run.save()
    prior = load_prior(tmp_path / "run" / "prior")
    assert prior.channels == 2 and prior.shape == (2, 16, 16) and prior.config["architecture"]["in_channels"] == 2
    x = torch.randn(3, 2, 23, 30, generator=torch.Generator().manual_seed(0))  # not a multiple of the levels
    out = prior(x, 0.5)
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        prior(torch.zeros(3, 23, 30), 0.5)


def _digests(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("files", [
    {"prior.json": None, "prior.safetensors": None},  # a copy of a shipped prior: no last.*
    {"prior.json": b'{"mine": 1}', "last.safetensors": b"\x00" * 64},  # a user's own files
    {"notes.txt": b"my thesis"},  # a foreign directory
    {"last.json": b"{not json", "last.safetensors": b"\x00" * 64},  # a damaged run
], ids=["shipped-prior-copy", "users-own-checkpoint", "foreign-directory", "damaged-run"])
def test_train_prior_refuses_a_directory_it_would_overwrite(tmp_path, capsys, files):
    out = tmp_path / "dir"
    out.mkdir()
    shipped = priors_dir() / "htc-discs-64"
    for name, content in files.items():
        (out / name).write_bytes(content if content is not None else (shipped / name).read_bytes())
    before = _digests(out)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(TINY))
    code = main(["train-prior", str(recipe_file), "--output", str(out), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and str(out) in err and "--overwrite" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _digests(out) == before
    with pytest.raises(ValueError, match="--overwrite"):  # the flow itself refuses too, not only the CLI
        train_prior(_recipe(), str(out), steps=1)
    assert _digests(out) == before


def test_overwrite_restarts_and_keeps_foreign_files(straight, tmp_path, capsys):
    directory, _ = straight
    out = tmp_path / "again"
    out.mkdir()
    for p in directory.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    (out / "notes.txt").write_text("keep me")
    finished = _digests(out)
    # A finished run of this recipe is reported on, not retrained ...
    train_prior(_recipe(), str(out), steps=2)
    assert _digests(out) == finished
    # ... until --overwrite, which starts again from step 0 and leaves other files alone.
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(TINY))
    code = main(["train-prior", str(recipe_file), "--output", str(out), "--steps", "2", "--overwrite"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last")[1]["completed_steps"] == 2
    assert (out / "notes.txt").read_text() == "keep me"
    # And another recipe's run is replaced only with --overwrite.
    with pytest.raises(ValueError, match="another recipe"):
        train_prior(_recipe(training__seed=1), str(out), steps=1)
    result = train_prior(_recipe(training__seed=1), str(out), steps=1, overwrite=True)
    assert result["completed_steps"] == 1


@pytest.mark.parametrize("prior, first, never", [
    ("htc-discs-64", "ct-dds", "ct-flowdps"),  # a diffusion prior of the discs: CT diffusion recipes only
    ("htc-discs-flow-64", "ct-flowdps", "ct-dds"),  # its family decides the method
    ("mri-brain-flow-64", "mri-flowdps", "ct-flowdps"),  # two channels: MR recipes, never CT ones
    ("mri-brain-hvae-64", "mri-pnp-hvae", "ct-vble"),
])
def test_the_suggested_recipes_take_the_prior_s_family_and_channels(prior, first, never):
    recipes = recipes_taking(prior)
    assert recipes[0] == first and never not in recipes
    for name in recipes:  # each would accept it: the same family check the pipeline makes
        method = load_recipe(name).method
        check_family(method.name, load_prior(priors_dir() / prior / "prior"), method.params["prior"])
