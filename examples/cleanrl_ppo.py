"""CleanRL-style PPO for MultiDiscrete actions on ``SpectrumVectorEnv``, in one file.

    python examples/cleanrl_ppo.py --timesteps 200000 --num-envs 64

The action is a power level for each (base station, band): ``MultiDiscrete([L] * B*K)``. The
policy has one categorical head per action dimension; an action's log-probability is the sum over
dimensions. Episodes end by truncation only, so a truncated step bootstraps from the value of
``info["final_obs"]``. Prints one JSON line per finished episode (means over the lanes of
``info["final_info"]["episode_metrics"]``) and a last one with the totals.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical

from testbed.env import SpectrumVectorEnv
from testbed.metrics import METRIC_KEYS

parser = argparse.ArgumentParser(description="CleanRL-style PPO on SpectrumVectorEnv")
parser.add_argument("--timesteps", type=int, default=200_000, help="env steps over all lanes")
parser.add_argument("--config", default="paper", help="preset name or YAML path")
parser.add_argument("--num-envs", type=int, default=64)
parser.add_argument("--num-steps", type=int, default=100, help="rollout length per lane")
parser.add_argument("--lr", type=float, default=3e-4)
parser.add_argument("--gamma", type=float, default=0.99)
parser.add_argument("--gae-lambda", type=float, default=0.95)
parser.add_argument("--num-minibatches", type=int, default=4)
parser.add_argument("--update-epochs", type=int, default=4)
parser.add_argument("--clip-coef", type=float, default=0.2)
parser.add_argument("--ent-coef", type=float, default=0.01)
parser.add_argument("--vf-coef", type=float, default=0.5)
parser.add_argument("--max-grad-norm", type=float, default=0.5)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
batch_size = args.num_envs * args.num_steps
minibatch_size = batch_size // args.num_minibatches
num_iterations = max(1, args.timesteps // batch_size)

torch.manual_seed(args.seed)
envs = SpectrumVectorEnv(args.config, num_envs=args.num_envs)
obs_dim = envs.single_observation_space.shape[0]
num_dims = len(envs.single_action_space.nvec)       # B*K action dimensions
num_levels = int(envs.single_action_space.nvec[0])  # L levels each


def layer(n_in: int, n_out: int, std: float = np.sqrt(2)) -> nn.Linear:
    linear = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(linear.weight, std)
    nn.init.zeros_(linear.bias)
    return linear


class Agent(nn.Module):
    def __init__(self):
        super().__init__()
        self.critic = nn.Sequential(layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0))
        self.actor = nn.Sequential(layer(obs_dim, 64), nn.Tanh(), layer(64, 64), nn.Tanh(),
                                   layer(64, num_dims * num_levels, 0.01))

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def get_action_and_value(self, x, action=None):
        # one categorical per action dimension: logits [n, B*K, L]
        dist = Categorical(logits=self.actor(x).view(-1, num_dims, num_levels))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.get_value(x)


agent = Agent()
optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)

obs = torch.zeros((args.num_steps, args.num_envs, obs_dim))
actions = torch.zeros((args.num_steps, args.num_envs, num_dims), dtype=torch.long)
logprobs = torch.zeros((args.num_steps, args.num_envs))
rewards = torch.zeros((args.num_steps, args.num_envs))
dones = torch.zeros((args.num_steps, args.num_envs))
values = torch.zeros((args.num_steps, args.num_envs))

global_step, episodes, start = 0, 0, time.time()
next_obs = torch.as_tensor(envs.reset(seed=args.seed)[0])
next_done = torch.zeros(args.num_envs)

for iteration in range(num_iterations):
    # rollout
    for step in range(args.num_steps):
        global_step += args.num_envs
        obs[step], dones[step] = next_obs, next_done
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(next_obs)
        actions[step], logprobs[step], values[step] = action, logprob, value

        next_obs_np, reward, terminated, truncated, info = envs.step(action.numpy())
        reward = torch.as_tensor(reward)
        if truncated.any():  # the episode was cut, not over: bootstrap from its last observation
            with torch.no_grad():
                final_value = agent.get_value(torch.as_tensor(info["final_obs"]))
            reward = reward + args.gamma * final_value * torch.as_tensor(truncated & ~terminated)
        rewards[step] = reward
        next_obs = torch.as_tensor(next_obs_np)
        next_done = torch.as_tensor(terminated | truncated, dtype=torch.float32)

        if "final_info" in info:  # the finished lanes' episode metrics
            metrics = info["final_info"]["episode_metrics"]
            lanes = info["_final_info"]
            episodes += int(lanes.sum())
            print(json.dumps({"global_step": global_step,
                              **{key: float(metrics[key][lanes].mean()) for key in METRIC_KEYS}}))

    # generalised advantage estimation
    with torch.no_grad():
        next_value = agent.get_value(next_obs)
        advantages = torch.zeros_like(rewards)
        last_gae = 0.0
        for t in reversed(range(args.num_steps)):
            if t == args.num_steps - 1:
                next_nonterminal, next_values = 1.0 - next_done, next_value
            else:
                next_nonterminal, next_values = 1.0 - dones[t + 1], values[t + 1]
            delta = rewards[t] + args.gamma * next_values * next_nonterminal - values[t]
            advantages[t] = last_gae = delta + args.gamma * args.gae_lambda * next_nonterminal * last_gae
        returns = advantages + values

    # flatten the batch
    b_obs, b_actions = obs.reshape(-1, obs_dim), actions.reshape(-1, num_dims)
    b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
    b_returns, b_values = returns.reshape(-1), values.reshape(-1)

    # optimise the clipped surrogate
    for epoch in range(args.update_epochs):
        for mb in torch.randperm(batch_size).split(minibatch_size):
            _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[mb], b_actions[mb])
            ratio = (new_logprob - b_logprobs[mb]).exp()
            adv = b_advantages[mb]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
            v_loss = 0.5 * ((new_value - b_returns[mb]) ** 2).mean()
            loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

envs.close()
print(json.dumps({"global_step": global_step, "episodes": episodes, "sps": int(global_step / (time.time() - start))}))
