"""Config: presets load, bad input fails early with the field and the allowed range; malformed
files, values of any shape, Pluto settings outside the device's range and sizes that would exhaust
memory fail while loading with a one-line ConfigError."""
import dataclasses
import pytest
import torch

from hardware.drivers.pluto import check_pluto_settings
from testbed.config import MAX_CONFIG_BYTES, ConfigError, load_config, observation_size, save_config
from testbed.env import SpectrumVectorEnv


def test_presets_load():
    paper = load_config("paper")
    assert (paper.network.num_bs, paper.network.num_ue, paper.network.num_bands) == (3, 10, 5)
    large = load_config("large")
    assert (large.network.num_bs, large.network.num_ue, large.network.num_bands) == (7, 42, 10)
    assert paper.network.task_family == "hardware"          # the paper preset's meta-learning family
    assert load_config(None).network == dataclasses.replace(paper.network, task_family="standard")


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


# --- whole documents: every shape fails while loading with one line ------------------------
BAD_FILES = [
    (b"- 1\n- 2\n", r"expected a mapping of sections .*got \[1, 2\]"),
    (b"42\n", r"expected a mapping of sections .*got 42"),
    (b"", r"the config file is empty"),
    (b"# only a comment\n", r"the config file is empty"),
    (b"false\n", r"expected a mapping of sections .*got False"),
    (b"network:\n  num_bs: 3\n  num_ue: [1, 2\n", r"invalid YAML at line 4, column 1: .*expected ',' or ']'"),
    (b"network:\n\tnum_bs: 3\n", r"invalid YAML at line 2, column 1: .*this line has a tab"),
    (b"run:\n  out_dir: r\xff\xfe\n", r"not UTF-8 text \(byte 17 is b'\\xff'\)"),
    (b"1: 2\nnetwork: {}\n", r"config: keys must be strings \(field names\), got 1"),
    (b"network:\n  num_bs: 3\n  num_bs: 4\n", r"line 3, column 3: .*found duplicate key 'num_bs'"),
    (b"network: {}\n---\nenv: {}\n", r"invalid YAML at line 2.*expected a single document"),
    (b"env: {seed: \x01}\n", r"invalid YAML: unacceptable character"),
    (b"network:\n  step_s: !!float fast\n", r"invalid YAML at line 2, column 11: cannot read 'fast' as tag:yaml"),
    (b"env: !!map [1]\n", r"invalid YAML at line 1, column 6: expected a mapping node, but found sequence"),
]


@pytest.mark.parametrize("content, message", BAD_FILES)
def test_a_malformed_file_fails_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_a_file_over_the_size_cap_is_refused_unparsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"network: {}\n" + b"#" * MAX_CONFIG_BYTES + b"\n\t[")   # malformed past the cap
    with pytest.raises(ConfigError, match=f"at most {MAX_CONFIG_BYTES:,} bytes"):
        load_config(path)


def test_a_directory_is_not_a_config(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "dir.yaml")


def test_merge_keys_still_work_and_yaml_1_2_numbers_are_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks: &t\n  coherence: [0.5, 0.6]\ntest_tasks:\n  <<: *t\n  coherence: [0.7, 0.8]\n"
                    "agent:\n  ppo: {learning_rate: 3e-4}\n  maml: {meta_lr: 1E-5}\nnetwork:\n  bandwidth_hz: 1e6\n")
    config = load_config(path)
    assert config.tasks.coherence == [0.5, 0.6] and config.test_tasks.coherence == [0.7, 0.8]
    assert (config.agent.ppo.learning_rate, config.agent.maml.meta_lr) == (3e-4, 1e-5)
    assert config.network.bandwidth_hz == 1e6


@pytest.mark.parametrize("text, message", [
    ("agent: {ppo: {learning_rate: '3e-4'}}", r"agent\.ppo\.learning_rate: expected a number, got '3e-4'"),
    ("agent: {ppo: {learning_rate: 3e-4x}}", r"agent\.ppo\.learning_rate: expected a number, got '3e-4x'"),
    ("env: {num_envs: 1e6}", r"env\.num_envs: expected an integer, got 1000000\.0"),
    ("network: {step_s: 1e400}", r"network\.step_s: inf is out of range"),
    ("network: {step_s: .nan}", r"network\.step_s: nan is out of range"),
])
def test_numbers_that_are_not_what_the_field_takes_fail(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("data, message", [
    ({"network": {"step_s": 10**400}}, r"network\.step_s: 1000.*\.\.\..*0 is out of range; allowed \[0\.0001, 1\.0\]"),
    ({"network": {"num_bs": [3]}}, r"network\.num_bs: expected an integer, got \[3\]"),
    ({"run": {"policies": [["random"]]}}, r"run\.policies: expected a flat list"),
    ({"hardware": {"radios": [{"name": "bs0", "nodes": [[0] * 5000]}]}}, r"hardware\.radios\[0\]\.nodes: expected a flat list"),
    ({"tasks": {"coherence": {"low": 0.1}}}, r"tasks\.coherence: expected a flat list"),
    ({"run": {"out_dir": "x" * 10_000}}, None),
    ({"run": {"out_dir": 3}}, r"run\.out_dir: expected a string, got 3"),
    ({"network": 5}, r"network: expected a mapping, got 5"),
])
def test_values_of_any_shape_fail_with_a_short_line(data, message):
    if message is None:
        assert load_config(data).run.out_dir == data["run"]["out_dir"]
        return
    with pytest.raises(ConfigError, match=message) as err:
        load_config(data)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_an_override_onto_a_malformed_section_names_it():
    with pytest.raises(ConfigError, match=r"env: expected a mapping, got 5"):
        load_config({"env": 5}, {"env": {"seed": 1}})


# --- env.device ----------------------------------------------------------------------------
def test_device_must_exist_on_this_machine():
    count = torch.cuda.device_count()
    assert load_config({"env": {"device": "cpu"}}).env.device == "cpu"
    for bad in ("bogus", f"cuda:{count}", "cuda:7" if count <= 7 else "cuda:99"):
        with pytest.raises(ConfigError, match=rf"env\.device: '{bad}' is not a torch device on this machine; "
                                              r"allowed: \['cpu'"):
            load_config({"env": {"device": bad}})
    if count:
        assert load_config({"env": {"device": f"cuda:{count - 1}"}}).env.device == f"cuda:{count - 1}"
        assert load_config({"env": {"device": "cuda"}}).env.device == "cuda"
    else:
        with pytest.raises(ConfigError, match=r"env\.device: 'cuda' is not a torch device"):
            load_config({"env": {"device": "cuda"}})


# --- the Pluto's ranges, checked at load by the driver's own check --------------------------
PLUTO_OUT_OF_RANGE = [
    ({"tx_gain_db": 5.0, "max_tx_gain_db": 10.0}, r"tx_gain_db=5.0 must be in \[-89.75, 0.0\] dB in 0.25 dB steps"),
    ({"tx_gain_db": -30.1}, r"tx_gain_db=-30.1 must be in \[-89.75, 0.0\] dB in 0.25 dB steps"),
    ({"rx_gain_db": 85.0}, r"rx_gain_db=85.0 must be a whole number of dB in \[-3, 71\]"),
    ({"rx_gain_db": 72.0}, r"rx_gain_db=72.0 must be a whole number of dB in \[-3, 71\]"),
    ({"rx_gain_db": 30.5}, r"rx_gain_db=30.5 must be a whole number of dB"),
    ({"sample_rate_hz": 1e8, "sample_rate_range_hz": [1e5, 1e8]}, r"sample_rate_hz=100000000 outside the Pluto's range"),
    ({"sample_rate_hz": 2e5, "sample_rate_range_hz": [1e5, 1e8]}, r"sample_rate_hz=200000 outside the Pluto's range"),
    ({"bandwidth_hz": 6e7}, r"bandwidth_hz=60000000 outside the Pluto's range \[200000, 20000000\] Hz"),
    ({"center_hz": 6e9, "allowed_center_hz": [6e9]}, r"center_hz=6000000000 outside the Pluto's range"),
    ({"center_hz": 7e7, "allowed_center_hz": [7e7]}, r"center_hz=70000000 outside the Pluto's range"),
]


@pytest.mark.parametrize("hardware, message", PLUTO_OUT_OF_RANGE)
def test_pluto_ranges_fail_while_loading_with_the_drivers_message(hardware, message):
    with pytest.raises(ConfigError, match=r"^hardware: " + message) as err:
        load_config("bench_pluto", {"hardware": hardware})
    settings = load_config("bench_mock", {"hardware": hardware}).hardware.settings()   # mock radios: no Pluto range
    with pytest.raises(ValueError) as driver:
        check_pluto_settings(settings)
    assert str(err.value) == f"hardware: {driver.value}"     # one check: the driver's


def test_pluto_settings_inside_the_range_load():
    hw = load_config("bench_pluto", {"hardware": {"center_hz": 915e6, "allowed_center_hz": [915e6],
                                                  "rx_gain_db": 73.0, "tx_gain_db": -89.75}}).hardware
    check_pluto_settings(hw.settings())
    assert (hw.rx_gain_db, hw.tx_gain_db) == (73.0, -89.75)


# --- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    ({"env": {"num_envs": 1_000_000}}, r"the step's link tensors would hold env\.num_envs·B·K·\(B\+U\) = 195,000,000 "
                                       r"values, over the limit of 134,217,728 per tensor"),
    ({"network": {"num_bs": 64, "num_ue": 512, "num_bands": 64}},
     r"the oracle policy's candidates would hold L\^B·env\.num_envs·B²·K = [\d,]+ values.*or drop oracle from run\.policies"),
    ({"network": {"num_bs": 64, "num_ue": 512, "num_bands": 64}, "run": {"policies": ["random"]},
      "agent": {"hidden_size": 4096}}, r"the MLP policy's input layer would hold agent\.hidden_size·obs = 188,743,680"),
    ({"network": {"episode_steps": 10_000}, "env": {"num_envs": 100}, "agent": {"maml": {"support_episodes": 1}}},
     r"the RL² rollout storage would hold network\.episode_steps·env\.num_envs·\(obs\+B·K·L\+3\) = 158,000,000"),
    ({"network": {"episode_steps": 10_000}, "env": {"num_envs": 1000}, "agent": {"ppo": {"rollout_episodes": 200}}},
     r"the PPO/MAML rollout storage would hold .* = 190,000,000,000 values"),
    ({"network": {"num_bs": 20, "num_levels": 16}, "run": {"policies": ["greedy"]}, "env": {"num_envs": 100_000}},
     r"the step's link tensors"),
])
def test_sizes_that_would_exhaust_memory_fail_with_the_product_and_the_limit(data, message):
    with pytest.raises(ConfigError, match=r"^sizes: " + message):
        load_config(data)


def test_dropping_the_oracle_lets_a_large_network_load():
    data = {"network": {"num_bs": 64, "num_ue": 512, "num_bands": 64}, "run": {"policies": ["random", "greedy"]}}
    assert load_config(data).network.num_bs == 64


@pytest.mark.parametrize("source", ["paper", "large", "bench_mock", {"network": {"num_bs": 5, "num_ue": 2, "num_bands": 7}}])
def test_observation_size_is_the_envs(source):
    env = SpectrumVectorEnv(source, num_envs=1)
    assert observation_size(env.params) == env.single_observation_space.shape[0]
    env.close()
