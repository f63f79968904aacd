"""The analyses' exceptions, in a module of their own: the CLI imports them at start-up, before any analysis."""


from ..errors import AnalysisError  # noqa: F401 (re-exported)


class Cancelled(Exception):
    """Raised inside an analysis when its `should_stop()` callback returned True."""
