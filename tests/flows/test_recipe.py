from pathlib import Path

import pytest

from inversa.resources import recipes_dir
from inversa.tasks.core.recipe import RecipeError, apply_overrides, load_recipe


@pytest.mark.parametrize("path", sorted(p for p in recipes_dir().glob("*.yaml") if not p.name.startswith("prior-")), ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_set_overrides_nested_fields_with_yaml_types():
    recipe = load_recipe("ct-tv", ["method.params.max_iter=123", "angular_range_deg=60", "store_samples=true"])
    assert recipe.method.params["max_iter"] == 123
    assert recipe.angular_range_deg == 60.0
    assert recipe.store_samples is True


def test_htc_recipe_selects_the_wedge_by_top_level_fields():
    recipe = load_recipe("htc2022-limited", ["angular_range_deg=60", "start_angle_deg=0"])
    assert (recipe.angular_range_deg, recipe.start_angle_deg) == (60.0, 0.0)


def test_unknown_field_method_and_parameter_are_named():
    with pytest.raises(RecipeError, match="colour"):
        load_recipe("ct-fbp", ["colour=blue"])
    with pytest.raises(RecipeError, match="unknown method 'sirt'.*fbp"):
        load_recipe("ct-fbp", ["method.name=sirt"])
    with pytest.raises(RecipeError, match="no parameter 'windw'"):
        load_recipe("ct-fbp", ["method.params.windw=hann"])
    with pytest.raises(RecipeError, match="samples"):
        load_recipe("ct-gaussian", ["samples=0"])


def test_bad_override_syntax_and_missing_recipe():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides({}, ["no-equals-sign"], "r.yaml")
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe("does-not-exist")


def test_invalid_yaml_is_reported_with_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)


def test_digest_tracks_what_changes_the_numbers_only():
    base = load_recipe("ct-tv")
    assert base.digest() == load_recipe("ct-tv", output="elsewhere.zarr", input="x.nc").digest()
    assert base.digest() != load_recipe("ct-tv", ["seed=1"]).digest()
    assert base.digest() != load_recipe("ct-tv", ["method.params.max_iter=7"]).digest()


def test_a_typo_is_named_once_by_its_public_field_with_the_closest_name():
    with pytest.raises(RecipeError) as caught:
        load_recipe("ct-fbp", ["grid.sise=64"])
    message = str(caught.value)
    assert "grid.sise: unknown field (did you mean 'size'?)" in message
    assert message.count("sise") == 1 and "GridSpec" not in message
    with pytest.raises(RecipeError, match=r"samplez: unknown field \(did you mean 'samples'\?\)"):
        load_recipe("ct-gaussian", ["samplez=4"])
    with pytest.raises(RecipeError, match=r"no parameter 'max_iters' \(did you mean 'max_iter'\?\)"):
        load_recipe("ct-tv", ["method.params.max_iters=4"])


def test_method_parameters_are_coerced_by_type_so_equal_recipes_have_equal_digests():
    raw = {"name": "tv", "method": {"name": "tv", "params": {"max_iter": "300", "lam": "0.002"}}}
    as_text = load_recipe(raw)
    as_numbers = load_recipe({**raw, "method": {"name": "tv", "params": {"max_iter": 300, "lam": 0.002}}})
    assert as_text.method.params == {"max_iter": 300, "lam": 0.002}
    assert as_text.digest() == as_numbers.digest()
    with pytest.raises(RecipeError, match=r"method\.params\.max_iter: Input should be a valid integer"):
        load_recipe({**raw, "method": {"name": "tv", "params": {"max_iter": "many"}}})


def test_the_kind_field_chooses_the_recipe_model():
    from pydantic import TypeAdapter

    from inversa.tasks.core.recipe import recipe_union
    from inversa.tasks.kinds.ct.recipe import CTRecipe
    from inversa.tasks.kinds.field.recipe import FieldRecipe

    assert isinstance(load_recipe("ct-fbp"), CTRecipe) and isinstance(load_recipe("field-gp"), FieldRecipe)
    with pytest.raises(RecipeError, match="kind: expected one of 'ct', 'field', 'mri', got 'xray'"):
        load_recipe("ct-fbp", ["kind=xray"])
    union = TypeAdapter(recipe_union())
    field = union.validate_python(load_recipe("field-gp").model_dump())
    assert isinstance(field, FieldRecipe) and field.digest() == load_recipe("field-gp").digest()
    assert isinstance(union.validate_python(load_recipe("ct-tv").model_dump()), CTRecipe)
