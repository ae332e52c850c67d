"""Policies: the safety mask in the logits, factorised log-probabilities, recurrent step == sequence."""
import pytest
import torch

from agents.policies import (MLPPolicy, RecurrentPolicy, act, entropy, kl_divergence, link_features, log_prob,
                             mask_logits, sample)

OBS_DIM, HEADS, LEVELS = 12, 3, 4
MASK = slice(6, 9)   # 3 mask entries, one per head


def test_masked_bands_only_ever_get_level_zero():
    torch.manual_seed(0)
    policy = MLPPolicy(OBS_DIM, HEADS, LEVELS, 16, 2, MASK)
    obs = torch.randn(500, OBS_DIM)
    obs[:, MASK] = (torch.rand(500, HEADS) < 0.5).float()
    with torch.no_grad():
        actions = sample(policy.logits(obs), torch.Generator().manual_seed(1))
    masked = obs[:, MASK] < 0.5
    assert masked.any()
    assert (actions[masked] == 0).all()
    assert (actions[~masked] > 0).any()


def test_without_the_mask_slice_masked_bands_can_get_power():
    torch.manual_seed(0)
    policy = MLPPolicy(OBS_DIM, HEADS, LEVELS, 16, 2, None)
    obs = torch.randn(500, OBS_DIM)
    obs[:, MASK] = 0.0
    with torch.no_grad():
        actions = sample(policy.logits(obs))
    assert (actions > 0).any()


def test_log_prob_and_entropy_match_torch_distributions():
    logits = torch.randn(7, HEADS, LEVELS)
    logits = mask_logits(logits, torch.tensor([1.0, 0.0, 1.0]).expand(7, HEADS))
    actions = sample(logits)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(log_prob(logits, actions), dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy(logits), dist.entropy().sum(-1))


def test_kl_divergence_matches_torch_distributions():
    p, q = torch.randn(5, HEADS, LEVELS), torch.randn(5, HEADS, LEVELS)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                                 torch.distributions.Categorical(logits=q)).sum(-1)
    torch.testing.assert_close(kl_divergence(p, q), expected)
    torch.testing.assert_close(kl_divergence(p, p), torch.zeros(5))


def test_greedy_acting_takes_the_most_likely_level_whatever_the_generator():
    logits = torch.randn(50, HEADS, LEVELS)
    draws = [act(logits, torch.Generator().manual_seed(s), greedy=True) for s in range(3)]
    assert all(torch.equal(d, logits.argmax(-1)) for d in draws)
    assert not torch.equal(act(logits, torch.Generator().manual_seed(0), greedy=False),
                           act(logits, torch.Generator().manual_seed(1), greedy=False))


def test_sampling_follows_the_probabilities():
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])).expand(20000, 1, 4)
    counts = torch.bincount(sample(logits, torch.Generator().manual_seed(0)).flatten(), minlength=4)
    torch.testing.assert_close(counts / 20000.0, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015, rtol=0)


@pytest.mark.parametrize("attention", [False, True])
def test_recurrent_step_by_step_equals_sequence_and_chunks(attention):
    torch.manual_seed(0)
    policy = RecurrentPolicy(OBS_DIM, HEADS, LEVELS, 16, attention=attention, num_attention_heads=2,
                             window=4, mask_slice=MASK)
    inp = torch.randn(9, 3, policy.input_dim)
    with torch.no_grad():
        full_logits, full_values, full_state = policy.sequence(inp, policy.initial_state(3))
        state, logits, values = policy.initial_state(3), [], []
        for t in range(9):
            lg, v, state = policy.step(inp[t], state)
            logits.append(lg), values.append(v)
        chunk_a = policy.sequence(inp[:5], policy.initial_state(3))
        chunk_b = policy.sequence(inp[5:], chunk_a[2])
    torch.testing.assert_close(torch.stack(logits), full_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(values), full_values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([chunk_a[1], chunk_b[1]]), full_values, atol=1e-5, rtol=1e-5)
    for a, b in zip(state, full_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_attention_reads_only_the_window():
    torch.manual_seed(0)
    policy = RecurrentPolicy(OBS_DIM, HEADS, LEVELS, 8, attention=True, num_attention_heads=2, window=3)
    inp = torch.randn(6, 1, policy.input_dim)
    with torch.no_grad():   # the attention block alone: the GRU would carry a perturbation forward
        out, _ = policy.gru(policy.encoder(inp), torch.zeros(1, 1, 8))
        feats, _, _ = policy._attend(out, *policy.initial_state(1)[1:])
        changed = out.clone()
        changed[0] += 5.0                       # step 0 falls out of the window of step 3 and later
        feats2, _, _ = policy._attend(changed, *policy.initial_state(1)[1:])
    assert not torch.allclose(feats[:3], feats2[:3])
    torch.testing.assert_close(feats[3:], feats2[3:])


def test_reset_state_zeroes_only_the_given_lanes():
    policy = RecurrentPolicy(OBS_DIM, HEADS, LEVELS, 8, attention=True, num_attention_heads=2, window=3)
    with torch.no_grad():
        _, _, state = policy.sequence(torch.randn(4, 2, policy.input_dim), policy.initial_state(2))
    h, memory, valid = policy.reset_state(state, torch.tensor([True, False]))
    assert h[0].abs().sum() == 0 and memory[0].abs().sum() == 0 and not valid[0].any()
    torch.testing.assert_close(h[1], state[0][1])
    assert valid[1].all()


def test_attention_needs_hidden_size_divisible_by_heads():
    with pytest.raises(ValueError, match="num_heads"):
        RecurrentPolicy(OBS_DIM, HEADS, LEVELS, 10, attention=True, num_attention_heads=4)


def test_agents_import_neither_the_simulator_nor_the_hardware():
    import subprocess
    import sys

    code = ("import sys, agents.ppo, agents.maml, agents.rl2, agents.config; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sim', 'hardware', 'testbed')); "
            "assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_link_features_pick_each_links_own_entries():
    """Per link (b,k) the indices of its interference, mask, last level and (informed) hidden
    parameters, and its BS and band one-hot, read off the network's observation layout."""
    from sim.network import observation_layout
    from sim.params import NetworkParams
    p = NetworkParams(num_bs=2, num_ue=3, num_bands=3, task_family="hardware", informed=True)
    layout = observation_layout(p)
    index, ids = link_features(layout, 2, 3)
    assert index.shape == (6, 6) and ids.shape == (6, 5)
    b, k = 1, 2
    h = b * 3 + k
    for j, name in enumerate(("interference", "mask", "prev_level", "pa_gain_offset", "access_gain_offset")):
        assert index[h, j] == layout[name].start + h
    assert index[h, 5] == layout["pa_compression"].start + b
    assert ids[h].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    plain, _ = link_features(observation_layout(NetworkParams(num_bs=2, num_ue=3, num_bands=3)), 2, 3)
    assert plain.shape == (6, 3)


def test_a_shared_link_head_learns_a_rule_once_for_every_link():
    """Logits of a link depend on its own entries through the one shared head: without a BS/band
    identity, two links with equal own entries get equal logits and unequal ones do not; masked
    links get level 0; and it runs under PPO's vmapped call (torch.func) like the plain actor."""
    torch.manual_seed(0)
    index = torch.tensor([[0, 6], [1, 7], [2, 8]])                # per head: a feature and its mask entry
    ids = torch.zeros(3, 1)                                         # no identity: a pure shared rule
    policy = MLPPolicy(OBS_DIM, HEADS, LEVELS, 16, 2, MASK, (index, ids))
    obs = torch.randn(4, OBS_DIM)
    obs[:, MASK] = 1.0
    obs[:, 1] = obs[:, 0]
    with torch.no_grad():
        a = policy.logits(obs)
    assert torch.equal(a[:, 0], a[:, 1]) and not torch.allclose(a[:, 0], a[:, 2])
    obs[:, 6] = 0.0
    with torch.no_grad():
        assert (sample(policy.logits(obs), torch.Generator().manual_seed(0))[:, 0] == 0).all()
    params = {k: v.unsqueeze(0) for k, v in policy.named_parameters()}
    logits, value = torch.func.vmap(lambda p, o: torch.func.functional_call(policy, p, (o,)))(params, obs.unsqueeze(0))
    assert logits.shape == (1, 4, HEADS, LEVELS) and value.shape == (1, 4)
