"""Serving and deployment: the inference server, router, targets, rollout strategies and health probes."""
