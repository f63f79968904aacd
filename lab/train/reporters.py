"""What a run reports, and to whom: the `Reporter` interface, a reporter that keeps everything in memory, and
the writer thread that commits a window's metrics while the training thread goes on."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

LOG_QUEUE = 8               # logging windows a background writer may hold before the trainer waits for it


class Reporter:
    """Receives what a run produces. The default does nothing; subclasses store or print it.

    `background_log`: whether the trainer may call `log` on a writer thread of its own (`BackgroundLog`), so
    the training thread keeps the GPU fed while a window's metrics are committed. None (the default) lets the
    trainer choose: yes on a GPU, no on the CPU. A reporter whose `should_stop` depends on what `log` received
    sets it False."""

    background_log: bool | None = None

    def start(self, env: dict, layers: dict, params: int, resumed_from: int) -> None: ...

    def log(self, step: int, scalars: dict[str, float], layers: dict[str, list[float]], progress: dict) -> None: ...

    def should_stop(self) -> bool:
        return False

    def before_checkpoint(self, step: int) -> None:
        """Called before each checkpoint write; raising stops the run without writing it (a process that lost
        its run must not overwrite the checkpoint of the attempt that now owns it)."""

    def finish(self, status: str, summary: dict, message: str | None) -> None: ...


@dataclass
class MemoryReporter(Reporter):
    """Keeps everything in lists; used by tests and the benchmark."""

    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    layers: list[tuple[int, str, list[float]]] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    layer_names: dict = field(default_factory=dict)
    status: str | None = None
    summary: dict = field(default_factory=dict)
    message: str | None = None
    stop_at: int | None = None   # ask the trainer to stop once this step has been logged
    _last_step: int = 0
    background_log = False       # should_stop reads what log recorded

    def start(self, env, layers, params, resumed_from):
        self.env, self.layer_names = env, layers

    def log(self, step, scalars, layers, progress):
        self._last_step = step
        self.scalars += [(step, k, v) for k, v in scalars.items()]
        self.layers += [(step, k, v) for k, v in layers.items()]

    def should_stop(self):
        return self.stop_at is not None and self._last_step >= self.stop_at

    def finish(self, status, summary, message):
        self.status, self.summary, self.message = status, summary, message


class BackgroundLog(Reporter):
    """Wraps a reporter so its `log` calls run in order on a writer thread, through a bounded queue (the trainer
    waits when LOG_QUEUE windows are pending: nothing is dropped).

    Everything else runs on the training thread and keeps its meaning: `before_checkpoint` and `finish` first
    wait until every queued window is written (a checkpoint never runs ahead of the stored metrics, and the
    final status comes after the last of them), and an exception the inner `log` raised (a lost run, a failing
    store) is raised again on the training thread at its next call, `should_stop` included, so a run that lost
    its ownership stops at the next iteration. After such an error nothing more is written. `close` waits for
    the queue and ends the thread; the trainer calls it however the run ends."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._queue: queue.Queue = queue.Queue(maxsize=LOG_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, daemon=True, name="metrics-writer")
        self._thread.start()

    def _write(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.inner.log(*item)
            except BaseException as exc:  # kept for the training thread, which raises it
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Wait until every queued window has been written; raise what writing one raised."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def start(self, env, layers, params, resumed_from):
        self.inner.start(env, layers, params, resumed_from)

    def log(self, step, scalars, layers, progress):
        self._raise()
        self._queue.put((step, scalars, layers, progress))

    def should_stop(self):
        self._raise()
        return self.inner.should_stop()

    def before_checkpoint(self, step):
        self.flush()
        self.inner.before_checkpoint(step)

    def finish(self, status, summary, message):
        self.flush()
        self.inner.finish(status, summary, message)
