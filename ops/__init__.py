"""Operator tools: the local stack, the demo, traffic replay and lineage."""
