"""What a user touches: config, the Gymnasium environments, reference policies, the CLI.

Importing ``testbed`` registers ``testbed/SpectrumAllocation-v0`` (the paper's configuration).
"""
import gymnasium

gymnasium.register(
    id="testbed/SpectrumAllocation-v0",
    entry_point="testbed.env:SpectrumEnv",
    vector_entry_point="testbed.env:SpectrumVectorEnv",
    disable_env_checker=False,
)
