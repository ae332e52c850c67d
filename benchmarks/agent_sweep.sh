#!/usr/bin/env bash
# The sweep behind every agent's defaults (docs/agents.md, "Defaults, and the sweep behind them"):
# paper preset (hardware task family, 16 lanes, T = 100), 120 training episodes per point, seeds 0
# and 1, each point evaluated on the fixed training-distribution evaluation set (16 tasks x 5
# episodes, argmax and sampled). About 35 min with 2 workers on the 2-core machine.
# Usage: bash benchmarks/agent_sweep.sh [OUT_DIR] [WORKERS]; one sweep.csv per agent under OUT_DIR.
set -euo pipefail
out=${1:-runs/agent-sweep}
workers=${2:-2}
common=(--config paper --episodes 120 --seeds 0 1 --eval-tasks train --workers "$workers")
testbed sweep --agent ppo "${common[@]}" --out "$out/ppo" \
    --grid agent.ppo.learning_rate=3e-4,1e-3,3e-3 --grid agent.ppo.ent_coef=0.0,0.01
testbed sweep --agent maml "${common[@]}" --out "$out/maml" \
    --grid agent.maml.inner_lr=0.03,0.1,0.3 --grid agent.maml.support_episodes=1,2
testbed sweep --agent rnn "${common[@]}" --out "$out/rnn" \
    --grid agent.recurrent.learning_rate=3e-4,1e-3 --grid agent.recurrent.ent_coef=0.0,0.01
testbed sweep --agent rnn_attention "${common[@]}" --out "$out/rnn_attention" \
    --grid agent.recurrent.learning_rate=3e-4,1e-3
testbed sweep --agent ppo "${common[@]}" --out "$out/ppo-schedule" \
    --grid agent.anneal_lr=false,true --grid agent.ppo.clip_vloss=false,true
testbed sweep --agent rnn "${common[@]}" --out "$out/rnn-schedule" \
    --grid agent.anneal_lr=false,true --grid agent.recurrent.clip_vloss=false,true
