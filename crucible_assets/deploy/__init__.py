"""Deployment: registered versions rolled out to a target, their health, and promotions that start rollouts."""
