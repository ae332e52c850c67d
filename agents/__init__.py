"""Agents: policies (MLP, GRU, GRU + attention), rollout storage and GAE, PPO, MAML and RL².

Backend-agnostic: they see only the environment's spaces, observation layout and arrays, and
import neither ``sim`` nor ``hardware``.
"""
