"""The lab's one error hierarchy: every failure a user can cause or meet is a `LabError` whose message is one line
that says what went wrong and what to do. The CLI catches `LabError` once and prints that line; the dashboard shows
it under the control or on the page it concerns. Anything else that escapes is a bug.

Each subclass also derives from the builtin its callers used to catch (ValueError, RuntimeError), so code that
catches those keeps working.
"""
from __future__ import annotations


class LabError(Exception):
    """A failure with a one-line message meant for the user."""


class UsageError(LabError):
    """A command line argparse cannot parse."""


class ConfigError(LabError, ValueError):
    """A model, data or run option that cannot be honoured; the message says what is allowed."""


class StudyError(ConfigError):
    """A study request that cannot be honoured (unknown study or budget, bad seeds); the message says why."""


class DataError(LabError, RuntimeError):
    """A data set that cannot be found or read; the message says where the lab looked and what to do."""


class CheckpointError(LabError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and the cause."""


class StoreError(LabError, RuntimeError):
    """The store cannot do what was asked (unknown run, wrong state, schema mismatch, unreadable database)."""


class LostRun(StoreError):
    """This process's attempt no longer owns its run (it was marked interrupted, resumed or deleted elsewhere)."""


class ExecutorError(LabError, RuntimeError):
    """An executor cannot start or reach what it runs on (no Ray installed, no cluster at the address)."""


class AnalysisError(LabError, RuntimeError):
    """An analysis that cannot be done as asked (no checkpoint yet, an unreadable checkpoint, a bad option)."""


class ExportError(LabError, RuntimeError):
    """An export that cannot be made here; the message says what is missing and how to fix it."""
