"""Rotation of auto-scaling groups onto a new image: policy, pure plan, executors, state."""
