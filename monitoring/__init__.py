"""Monitoring: served traffic against the deployed model's training reference.

`policy` decides (plain, no I/O), `state` remembers (JSON in storage),
`inference` reads the prediction log, `report` runs Evidently, `sensor` waits
in the triggerer, and `monitor` holds the task bodies the DAG wires together.
"""
