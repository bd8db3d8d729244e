"""Moving runs: the runtime, advancing, claims, the executor of one attempt, recovery,
dispatch, and the wiring that builds them once per process.
"""
