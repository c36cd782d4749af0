"""The training stage: point-in-time training sets, candidates, the champion/challenger gate.

Plain functions that `dags/training.py` wires into tasks and tests call directly.
Importing this package is cheap; pandas, feast, mlflow and sklearn are imported by
the modules that need them.
"""
