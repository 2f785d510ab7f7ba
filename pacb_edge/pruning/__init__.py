"""Structural channel pruning with Torch-Pruning: the criteria, the pruner, the latency model."""
