"""The analyses' exceptions, in a module of their own: the CLI imports them at start-up, before any analysis."""


class AnalysisError(RuntimeError):
    """An analysis that cannot be done as asked (no checkpoint yet, an unreadable checkpoint, a bad option);
    the message says why and what is possible."""


class Cancelled(Exception):
    """Raised inside an analysis when its `should_stop()` callback returned True."""
