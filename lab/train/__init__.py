"""The trainer: the paper's SGD schedule on device-resident data, with probes, checkpoints and resume.

`train(cfg, run_dir, reporter)` runs one configuration to the end (or until the reporter asks it to stop) and
reports metrics through a `Reporter`; `lab.runs.execute.StoreReporter`-style reporters persist them. Iterations are
counted from 1: the metrics logged at step s describe the state after s optimizer steps.

Logging windows: the training loss and error logged at step s are averages over the `log_every` iterations that
end at s. Gradient norms are sampled after the backward pass of every iteration divisible by `grad_every`, and
each window logs the mean of its samples: with `grad_every` < `log_every` an average over the window, with the
two equal (the presets) the single sample at the window's last iteration.

The modules: `trainer` (the `Trainer` and its loop, `train`, `evaluate`), `schedule` (SGD, the learning-rate
schedule and warm-up), `state` (the logging window, the progress saved in checkpoints, the batch of each step),
`reporters` (where metrics go), `deepening` (a run that grows from a trained parent). The package needs torch
only (no database, no plotting), so it runs wherever a run executes.
"""
from ..checkpoint import CHECKPOINT
from .deepening import DEEPEN_BATCHES, PARENT, Grown, deepened_net
from .reporters import LOG_QUEUE, BackgroundLog, MemoryReporter, Reporter
from .schedule import learning_rate, make_optimizer, set_learning_rate, warmup_over
from .state import BatchOrder, Progress, Window
from .trainer import GRAPH_MODES, Trainer, _autocast_factory, _sync, compile_model, evaluate, train

__all__ = [
    "CHECKPOINT", "DEEPEN_BATCHES", "GRAPH_MODES", "LOG_QUEUE", "PARENT", "BackgroundLog", "BatchOrder", "Grown",
    "MemoryReporter", "Progress", "Reporter", "Trainer", "Window", "_autocast_factory", "_sync", "compile_model",
    "deepened_net", "evaluate", "learning_rate", "make_optimizer", "set_learning_rate", "train", "warmup_over",
]
