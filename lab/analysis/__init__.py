"""Looking inside trained nets: three analyses of a stored run's network that explain why residual nets train
and plain nets degrade.

- `lesion.lesion`: test error with units deleted, singly, k at a time, or reordered (Veit et al. 2016).
- `landscape.landscape`: loss along filter-normalised random directions, 1-D or 2-D (Li et al. 2018).
- `shatter.shatter`: correlation of input gradients against input distance (Balduzzi et al. 2017).

Each is a pure function (network, data tensors, options) -> JSON-able dict, with `progress(done, total)` and
`should_stop()` callbacks. `checkpoint.restore` rebuilds a run's network (last checkpoint or init) and data as
the trainer had them; `jobs.run_analysis` runs an analysis on a stored run; `results.save_result` /
`load_results` keep results; `figures` draws them; `cli.add_commands` adds the commands.
"""
from .checkpoint import AnalysisError, Cancelled, Restored, restore
from .jobs import ANALYSES, resolve_options, result_name, run_analysis
from .results import load_results, result_names, save_result

__all__ = ["ANALYSES", "AnalysisError", "Cancelled", "Restored", "load_results", "resolve_options", "restore",
           "result_name", "result_names", "run_analysis", "save_result"]
