"""Config: presets load, bad input fails early with the field and the allowed range."""
import pytest

from testbed.config import ConfigError, load_config, save_config


def test_presets_load():
    paper = load_config("paper")
    assert (paper.network.num_bs, paper.network.num_ue, paper.network.num_bands) == (3, 10, 5)
    large = load_config("large")
    assert (large.network.num_bs, large.network.num_ue, large.network.num_bands) == (7, 42, 10)
    assert load_config(None).network == paper.network


@pytest.mark.parametrize("data, message", [
    ({"network": {"num_bs": 0}}, r"network\.num_bs: 0 is out of range; allowed \[1, 64\]"),
    ({"network": {"nmu_bs": 3}}, r"network: unknown key\(s\) \['nmu_bs'\]"),
    ({"network": {"num_bs": 2.5}}, r"network\.num_bs: expected an integer"),
    ({"network": {"bandwidth_hz": "10.0e6"}}, r"network\.bandwidth_hz: expected a number"),
    ({"tasks": {"coherence": [0.8, 1.2]}}, r"tasks\.coherence: 1\.2 is out of range; allowed \[0\.0, 1\.0\]"),
    ({"tasks": {"path_loss_exponent": [4.0, 2.0]}}, r"tasks\.path_loss_exponent: expected \[low, high\]"),
    ({"backend": "usrp"}, r"backend: 'usrp' is not allowed; choose from"),
    ({"env": {"task_distribution": "eval"}}, r"env\.task_distribution"),
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
])
def test_bad_values_name_the_field_and_the_allowed_range(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="presets"):
        load_config("nonexistent-preset")


def test_resolved_config_round_trips(tmp_path):
    config = load_config("large", {"env": {"seed": 9}})
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
