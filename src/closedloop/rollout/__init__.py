"""Staged rollouts: sticky assignment, always-valid guardrails and the ramp decision."""
