"""Batched analytic model of an integrated-access-backhaul (IAB) network: channel, SINR,
interference map, safety filter (Eq. 4), traffic queues and reward (docs/model.md).

Imports nothing from ``testbed``, ``hardware`` or ``agents``.
"""
