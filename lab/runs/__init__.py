"""Runs: the results store, the queue and its workers, sweeps, and what is shown about runs.

`store` keeps runs, jobs, metrics and their life cycle in SQL; `kinds` says how each kind of row is executed
(`train` here, the analyses registered by `lab.analysis`: this layer imports nothing above it); `execute` runs
one stored row under its attempt (the trainer wired to the store for `train`); `worker` claims queued rows and
runs each in its own process through an executor (`executors`), with `slots` choosing how many at once; `sweep`
expands a grid into validated configurations; `monitor` and `estimate` say how runs are doing and how long
they will take.
"""
