"""Config: presets, typed overrides, unknown keys and bad types as MonaError, round trip."""

import pytest

from mona.config import Config, config_from_dict, load_config, preset_names, save_config
from mona.errors import MonaError


def test_preset_names_include_the_three_presets():
    assert {"cpu-small", "paper", "demo"} <= set(preset_names())


def test_cpu_small_preset():
    config = load_config(["cpu-small"])
    assert config.data.image_size == 128
    assert (config.data.batch_labeled, config.data.batch_unlabeled) == (4, 4)
    assert config.train.iterations == 6000 and config.train.amp is True
    assert config.mona.pretrain_iterations == 1000  # the issue allows up to 2000; every real run used 1000


def test_paper_preset():
    config = load_config(["paper"])
    assert config.data.image_size == 256
    assert (config.data.batch_labeled, config.data.batch_unlabeled) == (12, 12)
    assert config.train.iterations == 30000 and config.mona.pretrain_iterations == 30000
    assert (config.mona.pretrain_batch_labeled, config.mona.finetune_batch_labeled) == (3, 4)


def test_demo_preset():
    config = load_config(["demo"])
    assert config.data.labeled == "1" and config.data.image_size == 64
    assert config.train.iterations == 250 and config.train.val_every == 50
    assert config.mona.pretrain_iterations == 83  # MONA splits the same 250 iterations over its two stages


def test_presets_apply_in_order_then_overrides():
    config = load_config(["paper", "cpu-small"], ["data.image_size=64"])
    assert config.train.iterations == 6000  # cpu-small after paper
    assert config.train.val_every == 200
    assert config.data.image_size == 64  # the override comes last


def test_overrides_are_typed():
    config = load_config([], ["train.iterations=5", "optim.lr=1", "train.amp=true", "data.labeled=7",
                              "method=mean_teacher", "mean_teacher.rampup=0.25"])
    assert config.train.iterations == 5 and type(config.train.iterations) is int
    assert config.optim.lr == 1.0 and type(config.optim.lr) is float  # int accepted for float
    assert config.train.amp is True
    assert config.data.labeled == "7"  # YAML reads 7 as an int; the field is a str
    assert config.method == "mean_teacher" and config.mean_teacher.rampup == 0.25


@pytest.mark.parametrize("override", ["train.iterations=abc", "train.iterations=1.5", "train.iterations=true",
                                      "train.amp=3", "optim.lr=fast", "data=3"])
def test_bad_type_is_a_mona_error(override):
    with pytest.raises(MonaError, match=override.split("=")[0]):
        load_config([], [override])


@pytest.mark.parametrize("override", ["train.iters=5", "nosuch.key=1", "methods=supervised"])
def test_unknown_key_is_a_mona_error(override):
    with pytest.raises(MonaError, match="unknown config key"):
        load_config([], [override])


def test_override_without_equals_is_a_mona_error():
    with pytest.raises(MonaError, match="section.key=value"):
        load_config([], ["train.iterations"])


@pytest.mark.parametrize("override", ["method=fancy", "data.labeled=0", "data.labeled=some", "data.image_size=100",
                                      "train.device=tpu", "mona.stage=middle", "mona.eqv_pixels=all"])
def test_invalid_values_are_mona_errors(override):
    with pytest.raises(MonaError):
        load_config([], [override])


def test_missing_config_file_names_it(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(MonaError, match="nope.yaml"):
        load_config([str(path)])


def test_yaml_file_with_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  iterations: 10\n  nosuch: 1\n")
    with pytest.raises(MonaError, match="train.nosuch"):
        load_config([str(path)])


def test_round_trip_through_dict():
    config = load_config(["cpu-small"], ["method=mean_teacher", "data.labeled=all", "train.seed=3", "optim.lr=0.02"])
    again = config_from_dict(config.to_dict())
    assert again == config
    assert again is not config and again.train is not config.train
    assert config_from_dict(Config().to_dict()) == Config()


def test_round_trip_through_saved_yaml(tmp_path):
    config = load_config(["demo"], ["method=mean_teacher", "out=runs/x", "data.root=/some/where"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config([tmp_path / "config.yaml"]) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left
