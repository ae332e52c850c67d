"""Task ranges given per node: a num_bs × num_bands table of PA offsets, a num_bs × num_bs table of
BS-to-BS gain offsets; each entry is drawn from its own [low, high]."""
from dataclasses import fields, replace

import pytest
import torch

from sim.network import SimNetwork
from sim.params import NetworkParams, TaskRanges, check_task_tables
from sim.tasks import sample_tasks

P = NetworkParams(num_bs=2, num_ue=4, num_bands=3, task_family="hardware")
OFFSETS = [[[-1.0, -0.5], [-4.0, -3.0], [-2.5, -2.0]],
           [[-5.0, -4.5], [-2.0, -1.0], [-10.0, -9.0]]]           # [B][K] of [low, high], dB


def draw(ranges: TaskRanges, n: int = 64, seed: int = 0, p: NetworkParams = P):
    return sample_tasks(p, ranges, n, torch.Generator().manual_seed(seed))


def test_each_entry_of_a_table_is_drawn_within_its_own_range():
    tasks = draw(TaskRanges(pa_gain_offset_db=OFFSETS))
    table = torch.tensor(OFFSETS)
    offset = tasks.pa_gain_offset_db                                        # [N, B, K]
    assert ((offset >= table[..., 0]) & (offset <= table[..., 1])).all()
    spread = offset.amax(0) - offset.amin(0)
    assert (spread > 0.5 * (table[..., 1] - table[..., 0])).all()          # each entry spans its range


def test_a_table_draws_what_one_range_draws_in_the_same_place():
    one = draw(TaskRanges(pa_gain_offset_db=[-3.0, -1.0]))
    same = draw(TaskRanges(pa_gain_offset_db=[[[-3.0, -1.0]] * 3] * 2))
    for f in fields(one):
        assert torch.allclose(getattr(one, f.name), getattr(same, f.name)), f.name


def test_a_table_of_the_wrong_shape_or_with_a_bad_pair_is_one_line_naming_the_field():
    wrong = TaskRanges(pa_gain_offset_db=[[[-1.0, 0.0]] * 3] * 3)
    with pytest.raises(ValueError, match=r"^pa_gain_offset_db: a table must be num_bs \(2\) × num_bands \(3\) "
                                         r"entries of \[low, high\], got 3 × 3$"):
        check_task_tables(P, wrong)
    with pytest.raises(ValueError, match="pa_gain_offset_db: a table must be"):
        draw(wrong)
    with pytest.raises(ValueError, match=r"bs_gain_offset_db: a table must be num_bs \(2\) × num_bs \(2\)"):
        check_task_tables(P, TaskRanges(bs_gain_offset_db=[[[0.0, 1.0]] * 3] * 2))
    with pytest.raises(ValueError, match=r"pa_gain_offset_db: expected \[low, high\] with low <= high, got \[-1.0, -2.0\]"):
        TaskRanges(pa_gain_offset_db=[[[-1.0, -2.0]] * 3] * 2)
    with pytest.raises(ValueError, match=r"rows of equal length, got row lengths \[3, 2\]"):
        TaskRanges(pa_gain_offset_db=[[[-1.0, 0.0]] * 3, [[-1.0, 0.0]] * 2])


def test_the_default_bs_gain_offset_draws_nothing_and_a_table_shifts_each_pair():
    base = draw(TaskRanges())
    assert torch.equal(base.gain_mean_db, draw(TaskRanges(bs_gain_offset_db=[0.0, 0.0])).gain_mean_db)
    coupled = draw(TaskRanges(bs_gain_offset_db=[[[0.0, 0.0], [10.0, 12.0]], [[-3.0, -3.0], [0.0, 0.0]]]))
    for f in fields(base):                     # drawn last: every other parameter is the default draw's
        if f.name != "bs_gain_mean_db":
            assert torch.equal(getattr(base, f.name), getattr(coupled, f.name)), f.name
    shift = coupled.bs_gain_mean_db - base.bs_gain_mean_db
    assert ((shift[:, 0, 1] >= 10.0) & (shift[:, 0, 1] <= 12.0)).all() and shift[:, 0, 1].std() > 0.3
    assert torch.allclose(shift[:, 1, 0], torch.tensor(-3.0))
    assert torch.isinf(coupled.bs_gain_mean_db.diagonal(dim1=1, dim2=2)).all()


def test_the_bs_gain_offset_reaches_the_interference_map():
    quiet = TaskRanges(incumbent_occupancy=[0.0, 0.0], pa_gain_offset_db=[0.0, 0.0], pa_compression_dbm=[60.0, 60.0])
    p = replace(P, task_family="standard")
    maps = []
    for ranges in (quiet, replace(quiet, bs_gain_offset_db=[20.0, 20.0])):
        net = SimNetwork(p, ranges, 4, seed=2)
        net.reset()
        net.step(torch.full((4, 2, 3), 3))
        maps.append(net.state.map_w)
    assert torch.allclose(maps[1], maps[0] * 100.0, rtol=1e-4)           # +20 dB on every pair
