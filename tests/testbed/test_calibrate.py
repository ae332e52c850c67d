"""`testbed calibrate`: on a mock bench whose PA responses, cable errors, noise floor and incumbents
are set (tests/data/twin_bench.py), the fit recovers them within stated tolerances, the twin it
writes loads, its quality figures are printed, and a recording it cannot use is one line, exit 2."""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from sim.network import SimNetwork
from testbed import calibrate as calibrate_cli
from testbed.calibrate import calibrate
from testbed.config import ConfigError, load_config
from tests.data.make_recording import DEFAULT_DIR as SHORT_RECORDING
from tests.data.twin_bench import INCUMBENTS, Truth, config, record

TRUTH = Truth()
STEPS = 300
OFFSET_TOL_DB, NOISE_TOL_DB, OCCUPANCY_TOL = 0.5, 1.0, 0.1


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="testbed")
    calibrate_cli.add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def bench_recording(tmp_path_factory):
    return record(tmp_path_factory.mktemp("twin") / "rec", STEPS, TRUTH)


@pytest.fixture(scope="module")
def fit(bench_recording):
    return calibrate(bench_recording)[0]


def test_the_fit_recovers_the_hidden_bench(fit):
    cfg = config()
    true_offset = TRUTH.offset_db(["bs0", "bs1"])                              # [B, K]
    assert np.all(np.isfinite(fit.offset_se_db))                               # both BSs served measured links
    assert np.abs(fit.offset_db - true_offset).max() < OFFSET_TOL_DB           # PA offset + ripple per BS and band
    assert np.abs(fit.offset_db.mean(1) - true_offset.mean(1)).max() < OFFSET_TOL_DB   # per-BS (per-link) gain
    ripple = fit.offset_db - fit.offset_db.mean(1, keepdims=True)
    assert np.abs(ripple - (true_offset - true_offset.mean(1, keepdims=True))).max() < OFFSET_TOL_DB
    assert fit.ue_radios == ["ue0"]
    assert np.abs(fit.noise_dbm - (cfg.network.noise_dbm + TRUTH.ue_noise_db)).max() < NOISE_TOL_DB
    assert abs(fit.occupancy[0] - INCUMBENTS["incumbent_occupancy"][0]) < OCCUPANCY_TOL
    assert abs(fit.on_steps[0] - INCUMBENTS["incumbent_on_steps"][0]) < 0.3 * INCUMBENTS["incumbent_on_steps"][0]
    assert abs(fit.incumbent_power_dbm[0] - INCUMBENTS["incumbent_power_dbm"][0]) < 1.0
    assert set(fit.residual_cfo_hz) == {"bs0", "bs1", "ue0"} and all(abs(v) < 50 for v in fit.residual_cfo_hz.values())


BS_OFFSET_TOL_DB = 0.2      # ε(b',b,k): measured directly, no SINR in between


def test_the_fit_recovers_the_hidden_bs_to_bs_couplings(fit):
    """The map turns (hardware.measure_map): ε = TX response of b' + coupling per pair and band, and the
    twin's c = ε - δ(b',k) (the coupling less the cable error δ holds), within the PA offsets' tolerance."""
    true_eps, true_c = TRUTH.bs_offset_db(["bs0", "bs1"]), TRUTH.coupling_c_db(["bs0", "bs1"])
    off = ~np.eye(2, dtype=bool)
    assert np.isnan(fit.bs_offset_db[~off]).all() and np.isfinite(fit.bs_offset_db[off]).all()
    assert np.abs(fit.bs_offset_db[off] - true_eps[off]).max() < BS_OFFSET_TOL_DB
    assert np.abs(fit.coupling_db[off] - true_c[off]).max() < OFFSET_TOL_DB
    twin, default = fit.map_quality["twin"], fit.map_quality["default"]
    assert twin["terms"] == default["terms"] > 100 and twin["median_db"] < 0.3 and default["median_db"] > 2.0


def test_the_twin_predicts_held_out_steps_better_than_the_default_model(fit):
    twin, default = fit.quality["twin"], fit.quality["default"]
    assert fit.held_out_steps >= 0.2 * STEPS and twin["links"] == default["links"] > 100
    assert twin["median_db"] <= 1.0 and twin["p95_db"] < default["median_db"]
    assert default["median_db"] > 3.0                      # the hidden offsets and noise are a few dB


def test_cli_writes_a_twin_that_loads_and_prints_its_quality(bench_recording, fit, tmp_path, capsys):
    out = tmp_path / "twin.yaml"
    assert cli(["calibrate", str(bench_recording), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"twin           median {fit.quality['twin']['median_db']:.2f} dB" in text
    assert f"default model  median {fit.quality['default']['median_db']:.2f} dB" in text
    twin = load_config(out)
    assert twin.backend == "sim" and twin.network.task_family == "hardware"
    assert "\nhardware:" not in out.read_text()                 # a sim config: the bench's radios stay out
    table = np.array(twin.tasks.pa_gain_offset_db)                       # [B, K, 2]: one range per BS and band
    assert table.shape == (2, 3, 2) and (table[..., 1] <= 0.0).all()
    assert (table[..., 0] < fit.offset_db).all() and (fit.offset_db < table[..., 1]).all()
    true_offset = TRUTH.offset_db(["bs0", "bs1"])
    assert (table[..., 0] <= true_offset).all() and (true_offset <= table[..., 1]).all()
    assert (table[..., 1] - table[..., 0]).max() < 1.5                   # centred per entry, not one wide range
    drawn = SimNetwork(twin.network, twin.tasks, 8).sample_tasks(8).pa_gain_offset_db      # the fixed task, 8 lanes
    assert ((drawn >= torch.tensor(table[..., 0])) & (drawn <= torch.tensor(table[..., 1]))).all()
    coupling = np.array(twin.tasks.bs_gain_offset_db)                    # [B', B, 2]
    true_c = TRUTH.coupling_c_db(["bs0", "bs1"])
    for tx, rx in ((0, 1), (1, 0)):
        assert coupling[tx, rx, 0] <= true_c[tx, rx] <= coupling[tx, rx, 1]
    assert (coupling[[0, 1], [0, 1]] == 0.0).all()
    assert "BS 0 -> BS 1: per band" in text and "BS->BS map terms on the held-out steps" in text
    assert abs(twin.network.noise_figure_db - (config().network.noise_figure_db + TRUTH.ue_noise_db)) < 1.0
    occ = twin.tasks.incumbent_occupancy
    assert occ[0] < fit.occupancy[0] < occ[1]
    assert twin.network.num_bs == 2 and twin.env.task_seed == config().env.task_seed   # the bench's network


def test_a_twin_table_of_the_wrong_shape_does_not_load():
    twin = {"network": {"num_bs": 2, "num_bands": 3, "task_family": "hardware"},
            "tasks": {"pa_gain_offset_db": [[[-1.0, 0.0]] * 3] * 3}}
    with pytest.raises(ConfigError) as err:
        load_config(twin)
    assert len(str(err.value).splitlines()) == 1
    assert "tasks.pa_gain_offset_db: a table must be num_bs (2) × num_bands (3) entries of [low, high], got 3 × 3" \
        in str(err.value)
    with pytest.raises(ConfigError, match=r"tasks.pa_gain_offset_db\[1\]: 5.0 is out of range; allowed \[-60.0, 0.0\]"):
        load_config({"tasks": {"pa_gain_offset_db": [[[-1.0, 0.0]], [[0.0, 5.0]]]}})


def test_a_directory_that_is_not_a_recording_is_one_line_exit_2(tmp_path, capsys):
    assert cli(["calibrate", str(tmp_path), "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a readable recording" in err
    assert not (tmp_path / "t.yaml").exists()


def test_a_recording_without_iq_is_refused(tmp_path, capsys):
    rec = record(tmp_path / "rec", steps=3, truth=TRUTH, iq=False)
    assert cli(["calibrate", str(rec), "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "iq: false (estimates only); calibrate (the noise floor per band) needs" in err


def test_too_few_steps_or_an_old_format_is_refused(tmp_path, capsys):
    assert cli(["calibrate", str(SHORT_RECORDING), "--out", str(tmp_path / "t.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps with measured links, a fit needs at least 20" in err
    old = tmp_path / "old"
    shutil.copytree(SHORT_RECORDING, old)
    rows = [json.loads(line) for line in (old / "steps.jsonl").read_text().splitlines()]
    (old / "steps.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "gain_db"}) + "\n"
                                             for r in rows))
    assert cli(["calibrate", str(old), "--out", str(tmp_path / "t.yaml")]) == 2
    assert "without the steps' gains (gain_db); record it again" in capsys.readouterr().err
    assert cli(["calibrate", str(SHORT_RECORDING), "--out", str(tmp_path / "t.yaml"), "--held-out", "0.99"]) == 2
    assert "--held-out=0.99 must be within 0.05..0.9" in capsys.readouterr().err
