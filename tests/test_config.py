"""Experiment configs: every field declares its meaning once, the shared sub-configs keep
the flat field names, and a config's identity (the run folder's digest, which decides
whether finished cells are reused) is what it was before the sub-configs existed."""

import dataclasses
import json

import pytest

from pcscale import experiments as ex
from pcscale.experiments._config import (
    apply_overrides,
    config_fields,
    describe_config,
    field,
    from_dict,
    to_dict,
)
from pcscale.experiments._identity import digest
from pcscale.experiments._shared import DataFields, InferenceFields, TrainingFields

# The digest of every preset, recorded before the experiment configs were built from
# shared sub-configs (issue 18): run folders written then must still be reused.
PRESET_DIGESTS = {
    "width-depth-linear/quick": "ddcb1815b6a73926",
    "width-depth-linear/paper": "2232284d384849eb",
    "toy/quick": "06671e0e7fa1b418",
    "toy/paper": "1c96abc91710cc19",
    "toy-sp/quick": "4b82da4ff7679aff",
    "toy-sp/paper": "d4eb41546926d0a8",
    "gamma0-sweep/quick": "5b2278d5bcac0216",
    "gamma0-sweep/paper": "86e09ccd0f1aa8ba",
    "saddle/quick": "e0bb3c3bd61a2640",
    "saddle/paper": "af35a44631a708bf",
    "inference-convergence/quick": "4816e45ba40fef9b",
    "inference-convergence/paper": "13884f89a0f9e5ae",
    "residual-mlp/quick": "588073c2b28ebdc6",
    "residual-mlp/paper": "1f137cb373cc2394",
    "resnet-cnn/quick": "5eb439e4f54579fc",
    "resnet-cnn/paper": "ec136afb3176076d",
    "transformer/quick": "cf89b65c9c0320e6",
    "transformer/paper": "af2096404634c486",
    "coord-check/quick": "ce6db8b22b964469",
    "coord-check/paper": "8ea6745a9edf9ee8",
    # Added with the experiment (issue 21), after the sub-configs:
    "pc-variants/quick": "9812d49558fb225f",
    "pc-variants/paper": "8d486b0fd0072a2d",
    # Added with the benchmark suite (issue 22):
    "bench-mlp-mnist/quick": "75aa73cd88ac34f2",
    "bench-mlp-mnist/full": "c508290d80c2ac2a",
    "bench-mlp-fashion/quick": "3073381d2cc87362",
    "bench-mlp-fashion/full": "ef3a7a2647f318c1",
    "bench-vgg5-cifar10/quick": "534d1d194233fdb2",
    "bench-vgg5-cifar10/full": "13e889cb9495b9dc",
    "bench-vgg7-cifar10/quick": "16b75d162edcad84",
    "bench-vgg7-cifar10/full": "423ce91299dbb643",
    "bench-vgg5-cifar100/quick": "a0f82d9b68bd6ef3",
    "bench-vgg5-cifar100/full": "468998685a8cb940",
    "bench-vgg7-tinyimagenet/quick": "20557ea54e4fc210",
    "bench-vgg7-tinyimagenet/full": "6591cd2e09613130",
    "bench-resnet18-cifar10/quick": "7467c0e795903813",
    "bench-resnet18-cifar10/full": "0944b0d72806a203",
    "bench-deep-resmlp-mnist/quick": "a999c1ad1650e431",
    "bench-deep-resmlp-mnist/full": "ab7178aea35904ca",
}


def test_every_preset_keeps_the_identity_it_had_before_the_shared_sub_configs():
    found = {f"{name}/{preset}": digest(name, experiment.preset(preset))
             for name, experiment in ex.EXPERIMENTS.items() for preset in experiment.presets}
    assert found == PRESET_DIGESTS


@pytest.mark.parametrize("name", sorted(ex.EXPERIMENTS))
def test_every_field_of_every_experiment_config_has_a_meaning(name):
    fields = config_fields(ex.get(name).config_type)
    assert fields
    missing = [key for key, info in fields.items() if not info.meaning.strip()]
    assert missing == [], f"{name}: fields without a meaning: {missing}"
    for info in fields.values():  # one line each, as show-config prints them
        assert "\n" not in info.meaning


def test_field_order_does_not_change_a_config_or_its_identity():
    config = ex.get("residual-mlp").preset("paper")
    saved = to_dict(config)
    reordered = dict(reversed(list(saved.items())))
    assert list(reordered) != list(saved)
    assert from_dict(type(config), reordered) == config
    text = json.dumps({"experiment": "residual-mlp", "config": reordered}, sort_keys=True)
    assert text == json.dumps({"experiment": "residual-mlp", "config": saved}, sort_keys=True)


def test_a_run_folder_whose_saved_config_lists_its_keys_in_another_order_is_reused(tmp_path):
    out = tmp_path / "run"
    small = ["widths=4", "skips=false", "seeds=0", "steps=2", "dmft=false"]
    first = ex.run("toy", "quick", out, overrides=small, progress=False)
    assert first.computed and not first.reused
    run_file = out / "run.json"
    content = json.loads(run_file.read_text())
    content["config"] = dict(reversed(list(content["config"].items())))
    run_file.write_text(json.dumps(content))
    again = ex.run("toy", "quick", out, overrides=small, progress=False)
    assert again.reused == first.computed and not again.computed
    assert ex.load_run(out).config == first.config


def test_shared_fields_keep_their_flat_names_for_overrides():
    config = apply_overrides(ex.get("residual-mlp").preset("quick"),
                             ["batch=8", "rtol=0", "learning_rate=0.5", "parameterisation=sp"],
                             experiment="residual-mlp")
    assert (config.batch, config.rtol, config.learning_rate, config.parameterisation) == (8, 0.0, 0.5, "sp")
    names = set(to_dict(config))
    assert {"dataset", "data_root", "fallback", "batch", "widths", "seeds", "solver", "max_inference_steps"} <= names
    assert isinstance(config, DataFields) and isinstance(config, InferenceFields)


def test_a_changed_default_keeps_the_shared_meaning_and_a_redeclared_field_replaces_it():
    residual = config_fields(ex.get("residual-mlp").config_type)
    shared = config_fields(DataFields)
    assert residual["batch"].default == 32 and shared["batch"].default == 16
    assert residual["batch"].meaning == shared["batch"].meaning
    transformer = config_fields(ex.get("transformer").config_type)
    assert transformer["dataset"].choices == () and "plain-text" in transformer["dataset"].meaning
    assert "mnist" in residual["dataset"].choices and "digits" in residual["dataset"].choices


def test_declared_choices_are_checked_with_the_field_value_and_choices_named():
    config = ex.get("residual-mlp").preset("quick")
    with pytest.raises(ValueError, match=r"`dataset` must be one of mnist, .*digits, got 'mnits'"):
        dataclasses.replace(config, dataset="mnits")
    with pytest.raises(ValueError, match="`activation` must be one of tanh, relu, linear, gelu, got 'swish'"):
        dataclasses.replace(config, activation="swish")
    with pytest.raises(ValueError, match="`parameterisations` must be one of"):
        dataclasses.replace(ex.get("coord-check").preset("quick"), parameterisations=("mupc", "xp"))
    with pytest.raises(ValueError, match="`meaning` must be a non-empty sentence"):
        field(1, " ")


def test_describe_config_lists_value_type_default_choices_and_meaning():
    config = dataclasses.replace(ex.get("toy").preset("quick"), steps=7)
    text = describe_config(config, title="toy:")
    lines = text.splitlines()
    assert lines[0] == "toy:"
    assert "  steps = 7    (integer; default 50)" in lines
    assert lines[lines.index("  steps = 7    (integer; default 50)") + 1].strip() == "T: the training steps"
    assert "  parameterisation = mupc    (text; default mupc; one of mupc, mup, sp, ntp)" in lines
    assert "  skips = true,false    (comma-separated booleans; default true,false)" in lines
    assert len(lines) == 1 + 2 * len(config_fields(type(config)))


def test_training_fields_default_to_float32():
    assert config_fields(TrainingFields)["float64"].default is False
