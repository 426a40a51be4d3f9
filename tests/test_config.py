"""Presets are data; configs are validated with errors that say what is wrong."""
from __future__ import annotations

import pytest

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
