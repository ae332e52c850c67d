"""`testbed calibrate`: on a mock bench whose PA responses, cable errors, noise floor and incumbents
are set (tests/data/twin_bench.py), the fit recovers them within stated tolerances, the twin it
writes loads, its quality figures are printed, and a recording it cannot use is one line, exit 2."""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from testbed import calibrate as calibrate_cli
from testbed.calibrate import calibrate
from testbed.config import load_config
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
    low, high = twin.tasks.pa_gain_offset_db
    assert low < fit.offset_db.min() and fit.offset_db.max() < high <= 0.0
    assert abs(twin.network.noise_figure_db - (config().network.noise_figure_db + TRUTH.ue_noise_db)) < 1.0
    occ = twin.tasks.incumbent_occupancy
    assert occ[0] < fit.occupancy[0] < occ[1]
    assert twin.network.num_bs == 2 and twin.env.task_seed == config().env.task_seed   # the bench's network


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
