"""Process liveness on this host: a process id alone can name another process once the first has exited (ids are
recycled, and a reboot starts them again), so a run's process is identified by its id, its start time and the
boot it ran in."""
from __future__ import annotations

import os

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def pid_alive(pid: int | None) -> bool:
    """True when process `pid` exists on this host and has not exited (a stopped process is alive)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_started(pid: int | None) -> int | None:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None where that
    cannot be read (no such process, no /proc)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, OverflowError):
        return None


def boot_id() -> str | None:
    """This boot's id (Linux), None elsewhere."""
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip()[:64] or None
    except OSError:
        return None


def process_identity(pid: int | None) -> dict:
    """The columns that identify process `pid` of this host beside its id: {pid_started, boot_id}."""
    return dict(pid_started=process_started(pid), boot_id=boot_id() if pid else None)


def process_alive(pid: int | None, started: int | None = None, boot: str | None = None) -> bool:
    """True when process `pid` is alive and is the process recorded with it: same boot and same start time,
    where those were recorded (a row without them is judged by its id alone)."""
    if not pid_alive(pid):
        return False
    if boot is not None:
        now = boot_id()
        if now is not None and now != boot:
            return False
    if started is not None:
        now_started = process_started(pid)
        if now_started is not None and now_started != started:
            return False
    return True
