"""Looking inside trained nets: three analyses of a stored run's network that explain why residual nets train
and plain nets degrade.

- `lesion.lesion`: test error with units deleted, singly, k at a time, or reordered (Veit et al. 2016).
- `landscape.landscape`: loss along filter-normalised random directions, 1-D or 2-D (Li et al. 2018).
- `shatter.shatter`: correlation of input gradients against input distance (Balduzzi et al. 2017).

Each is a pure function (network, data tensors, options) -> JSON-able dict, with `progress(done, total)` and
`should_stop()` callbacks. `checkpoint.restore` rebuilds a run's network (last checkpoint or init) and data as
the trainer had them; `jobs.run_analysis` runs an analysis on a stored run; `results.save_result` /
`load_results` keep results; `figures` draws them; `lab.cli.analysis` holds their commands.
"""
import importlib

# name -> submodule; loaded on first use, so `python -m lab` starts without importing the analyses
_EXPORTS = {
    "AnalysisError": "errors", "Cancelled": "errors", "Restored": "restored", "restore": "restored",
    "ANALYSES": "options", "resolve_options": "options", "result_name": "options", "run_analysis": "jobs",
    "load_results": "results", "result_names": "results", "save_result": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lab.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
