"""Test support shipped with hf_soups: a local Hub (:mod:`hf_soups.testing.hub_server`) and its pytest fixture."""
