"""Runs: the results store, the queue and its workers, sweeps, and what is shown about runs.

`store` keeps runs, metrics and their life cycle in SQL; `execute` runs one stored run (the trainer wired to the
store); `worker` claims queued runs and runs each in its own process; `sweep` expands a grid into validated
configurations; `monitor` and `estimate` say how runs are doing and how long they will take.
"""
