"""Recipes: every shipped recipe validates, overrides apply, and mistakes name the bad key."""

from __future__ import annotations

import pytest
import yaml

from agripatch.data.transforms import eval_transform, train_transform
from agripatch.errors import RecipeError
from agripatch.recipes import (
    list_recipes,
    load_recipe,
    parse_overrides,
    recipe_from_dict,
)

SHIPPED = ["cassava", "coffee", "coffee_highres", "ibean", "imagenet", "plantdoc", "plantvillage", "smoke"]


def test_shipped_recipes_are_listed():
    assert list_recipes() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_validates_and_builds_its_augmentation(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    pipeline = train_transform(recipe.cascade.glance_size, recipe.augment.get("train"), recipe.stages.anchornet.crop_scale)
    import numpy as np

    image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    out = pipeline(image=image)["image"]
    assert out.shape == (recipe.cascade.glance_size, recipe.cascade.glance_size, 3)
    assert eval_transform(64)(image=image)["image"].shape == (64, 64, 3)


def test_resolved_recipe_round_trips_through_yaml():
    recipe = load_recipe("ibean")
    again = recipe_from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe


def test_overrides_apply_nested_and_typed():
    recipe = load_recipe("smoke", ["stages.anchornet.epochs=7", "cascade.k=4", "cascade.thresholds=[0.5,0.5,0.5,0.5,0]"])
    assert recipe.stages.anchornet.epochs == 7
    assert recipe.cascade.k == 4
    assert recipe.cascade.thresholds == [0.5, 0.5, 0.5, 0.5, 0.0]
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_unknown_key_is_named():
    with pytest.raises(RecipeError, match=r"unknown key 'stages\.anchornet\.epoch'"):
        load_recipe("smoke", ["stages.anchornet.epoch=1"])


def test_wrong_type_is_named():
    with pytest.raises(RecipeError, match=r"key 'cascade\.k'"):
        load_recipe("smoke", ["cascade.k=many"])


def test_bad_override_syntax_and_unknown_recipe():
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe("smoke", ["cascade.k"])
    with pytest.raises(RecipeError, match="unknown recipe 'nope'.*smoke"):
        load_recipe("nope")


def test_recipe_file_with_bad_yaml_and_bad_augment(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: x\naugment:\n  train: {HorizontalFlip: 0.5}\n")
    with pytest.raises(RecipeError, match="augment"):
        load_recipe(wrong)


def test_invalid_albumentations_spec_names_the_key():
    with pytest.raises(RecipeError, match="augment"):
        train_transform(64, {"transform": {"__class_fullname__": "NoSuchTransform"}}, (0.5, 1.0))


def test_crop_scale_must_be_ordered():
    with pytest.raises(RecipeError, match="crop_scale"):
        load_recipe("smoke", ["stages.anchornet.crop_scale=[0.9,0.2]"])
