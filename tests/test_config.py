"""Presets are data; configs are validated with errors that say what is wrong."""
from __future__ import annotations

import pytest
import yaml

from torchalign.config import load_preset, preset_names, resolve_config
from torchalign.errors import InputError


def test_linear_presets_exist_and_validate() -> None:
    names = preset_names()
    for name in ("rigid", "similarity", "affine"):
        assert name in names
        cfg = load_preset(name)
        assert cfg.preset == name and cfg.stages


def test_preset_typo_lists_valid_names() -> None:
    with pytest.raises(InputError) as err:
        load_preset("afine")
    assert "afine" in str(err.value) and "affine" in str(err.value) and "rigid" in str(err.value)


def test_config_file_overrides_preset_and_cli_overrides_file(tmp_path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("preset: rigid\nseed: 7\ninit: geometry\n")
    cfg = resolve_config(None, cfg_file, {"init": "com", "metric": "ncc"})
    assert cfg.preset == "rigid" and cfg.seed == 7 and cfg.init == "com"
    assert all(s.metric == "ncc" for s in cfg.stages)


def test_unknown_key_is_named(tmp_path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("preset: affine\nstages:\n  - transform: rigid\n    learning_rate: 3\n")
    with pytest.raises(InputError) as err:
        resolve_config(None, cfg_file)
    assert "learning_rate" in str(err.value) and str(cfg_file) in str(err.value)


@pytest.mark.parametrize("body, fragment", [
    ("stages:\n  - transform: rigid\n    lr: -1\n", "lr"),
    ("stages:\n  - transform: bogus\n", "transform"),
    ("stages:\n  - transform: rigid\n    levels: []\n", "levels"),
    ("stages:\n  - transform: svf\n    regularisers: [{name: diffusion, weight: -2}]\n", "weight"),
    ("stages: []\n", "stage"),
])
def test_invalid_values_are_reported(tmp_path, body: str, fragment: str) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(body)
    with pytest.raises(InputError) as err:
        resolve_config(None, cfg_file)
    assert fragment in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(InputError, match="YAML"):
        resolve_config(None, bad)
    with pytest.raises(InputError, match="no such config"):
        resolve_config(None, tmp_path / "missing.yaml")


@pytest.mark.parametrize("stage, fragment", [
    ({"transform": "rigid", "metric": "bogus"}, "bogus"),
    ({"transform": "rigid", "metric": "mi", "metric_options": {"radius": 2}}, "radius"),
    ({"transform": "syn", "regularisers": [{"name": "diffusion", "options": {"foo": 1}}]}, "foo"),
    ({"transform": "syn", "regularisers": [{"name": "bogus"}]}, "bogus"),
    ({"transform": "rigid", "optimizer": "Adamm"}, "Adamm"),
    ({"transform": "rigid", "optimizer_options": {"betaz": 1}}, "betaz"),
    ({"transform": "rigid", "freeze": ["translation", "rotation"]}, "nothing"),
    ({"transform": "syn", "freeze": ["rotation"]}, "freeze"),
    ({"transform": "syn", "transform_options": {"control_spacing": 3}}, "control_spacing"),
    ({"transform": "affine", "transform_options": {"stride": 2}}, "transform_options"),
    ({"transform": "svf", "transform_options": {"steps": -1}}, "steps"),
])
def test_every_name_and_option_is_checked_when_the_config_loads(tmp_path, stage: dict, fragment: str) -> None:
    """Names and options of metrics, regularisers, optimisers and transforms fail at load time (before
    this, each failed only when its stage started, minutes into a run), naming the stage."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"stages": [{"transform": "rigid"}, stage]}))
    with pytest.raises(InputError) as err:
        resolve_config(None, cfg_file)
    assert fragment in str(err.value) and "stages.1" in str(err.value)


@pytest.mark.parametrize("preset", ["rigid", "similarity", "affine", "syn", "svf", "ffd", "dense"])
@pytest.mark.parametrize("metric", ["mse", "sad", "ncc", "lncc", "mi", "nmi", "ngf", "mind"])
def test_metric_override_drops_options_the_metric_does_not_take(preset: str, metric: str) -> None:
    """``--metric M`` with any preset validates: options of the preset's own metric that M does not
    take (LNCC's radius under MI) are dropped; options M does take are kept."""
    cfg = resolve_config(preset, None, {"metric": metric})
    for stage, original in zip(cfg.stages, load_preset(preset).stages):
        assert stage.metric == metric
        kept = {k: v for k, v in original.metric_options.items() if k in stage.metric_options}
        assert stage.metric_options == kept
    if metric == "lncc" and preset == "syn":
        assert cfg.stages[-1].metric_options == {"radius": 2}
