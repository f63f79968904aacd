"""The Ray executor: each claimed run is one Ray task, placed by Ray on whichever node has its share free.

The task runs the lab's own entry point, `python -m lab _execute RUN --attempt TOKEN --results DIR`, in a child
process it polls (a task blocked in `Popen.wait()` cannot be cancelled). Its resource request is the run's
share: `1/per_gpu` of a GPU and as much of a CPU (GPU clusters), or `cpus_per_run` CPUs (clusters without GPUs,
or `device="cpu"`). Ray sets CUDA_VISIBLE_DEVICES to the GPU it picked; the child trains on `--device auto`, its
one visible GPU, or the CPU where that GPU does not work (a node that declares GPUs it has not got). The task
records where it landed in the run's `slot` (`ray:<node>:gpu<N>` or `ray:<node>:cpu`); the dispatcher records
the task in `executor_ref` (`ray:<task id>`).

Every node must see the same project checkout and the same results folder at the same paths (a shared file
system), and reach the same database server: checkpoints and logs are written there, and a run resumed on
another node reads its checkpoint from there. A cluster with nodes on several machines needs PostgreSQL (SQLite's
write-ahead log corrupts over a network file system: refused at start). The database's address goes to the tasks without
its password (task arguments are stored by Ray and shown to whoever reaches its dashboard); each node takes the
password from its own environment (`LAB_DB_URL` naming the same server, database and user, or `PGPASSWORD`) or
its `~/.pgpass`. Whoever reaches the Ray ports can run code on every node: keep the cluster on a private network.

Ray owns the tasks of the dispatcher that submitted them: when the dispatcher stops it first stops its runs
(each checkpoints and records `interrupted`) and the worker queues them again for the next dispatcher. A Ray task
is never retried by Ray (a retry would start from scratch); resume comes from the lab's checkpoint, through the
store (`lab worker --retries N`).
"""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import url as sa_url

from ...runtime import PROJECT_ROOT
from ..store import LostRun, Store
from . import Ended, Executor, ExecutorError

TASK_POLL_S = 0.5          # how often a task looks at its child process
STOP_GRACE_S = 20.0        # a stopped run's process gets this long after SIGTERM to checkpoint, then SIGKILL
CONNECT_TIMEOUT_S = 5.0    # an address that does not answer within this is unreachable
SHUTDOWN_WAIT_S = 30.0     # how long a stopping dispatcher waits for its runs to checkpoint and end
MAX_CPUS_PER_RUN = 1024
SHARE_EPS = 1e-6           # Ray rounds fractional resources to 1e-4


def import_ray():
    """Ray, or a clear ExecutorError when it is not installed (it is an optional dependency)."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray, which is not installed here: "
                            "pip install -r requirements-cluster.txt (or pip install 'ray>=2.40')") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a HOST:PORT address nothing answers at, quickly (ray.init would retry for a long time)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address must be HOST:PORT (the head's GCS port, 6379 by default), 'auto' or "
                            f"ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}; start one with "
                            f"`ray start --head` or give the head's address") from None


@dataclass
class Share:
    """What one run asks Ray for."""
    gpus: float
    cpus: float

    @property
    def name(self) -> str:
        return f"ray:gpu{self.gpus:g}" if self.gpus else f"ray:cpu{self.cpus:g}"


def share_for(cluster_gpus: float, per_gpu: int, cpus_per_run: float, device: str = "auto") -> Share:
    """A run's request: 1/per_gpu of a GPU and as much of a CPU where the cluster has GPUs (and `device` is not
    'cpu'), else `cpus_per_run` CPUs and no GPU."""
    if cluster_gpus > 0 and device != "cpu":
        return Share(gpus=1.0 / per_gpu, cpus=1.0 / per_gpu)
    return Share(gpus=0.0, cpus=float(cpus_per_run))


def node_capacity(resources: dict, share: Share) -> int:
    """How many runs of `share` fit on a node with these total resources (Ray packs fractional GPUs onto one
    GPU each, so a GPU holds floor(1/share) of them)."""
    fits = []
    if share.gpus:
        per_gpu = math.floor(1.0 / share.gpus + SHARE_EPS)
        fits.append(math.floor(resources.get("GPU", 0.0) + SHARE_EPS) * per_gpu)
    if share.cpus:
        fits.append(math.floor(resources.get("CPU", 0.0) / share.cpus + SHARE_EPS))
    return max(0, min(fits)) if fits else 0


def task_db_url(url: str) -> str:
    """The store's address as it goes to a Ray task: without its password (see `node_db_url`)."""
    parsed = sa_url.make_url(url)
    if parsed.password is None:
        return url
    return parsed._replace(password=None).render_as_string(hide_password=False)  # set() keeps a None


def node_db_url(passed: str, environ=os.environ) -> str:
    """The address a task's node opens the store at: its own `LAB_DB_URL` when that names the same server,
    port, database and user as `passed` (it holds the node's password), else `passed` as it came, without a
    password, which libpq completes from the node's PGPASSWORD or ~/.pgpass."""
    own = environ.get("LAB_DB_URL")
    if not own or passed.startswith("sqlite"):
        return passed
    try:
        a, b = sa_url.make_url(passed), sa_url.make_url(own)
    except Exception:  # a malformed node setting: the address that came with the task
        return passed
    same = (a.get_backend_name(), a.host, a.port, a.database, a.username) == \
        (b.get_backend_name(), b.host, b.port, b.database, b.username)
    return own if same else passed


def sqlite_cluster_problem(url: str, nodes: list[dict]) -> str | None:
    """Why this store cannot serve this Ray cluster (None when it can): SQLite with live nodes on more than one
    machine (nodes on one machine, as in tests, share its local file system, where SQLite is safe)."""
    hosts = {n.get("NodeManagerAddress") or n.get("NodeID") for n in nodes if n.get("Alive")}
    if url.startswith("sqlite") and len(hosts) > 1:
        return (f"the Ray cluster has nodes on {len(hosts)} machines and this store is SQLite, which several "
                f"machines cannot share (its log corrupts over a network file system): use PostgreSQL "
                f"(LAB_DB_URL=postgresql://...; docs/cluster.md)")
    return None


def run_attempt(run_id: str, attempt: str, args: list[str], results: str, db_url: str,
                gpu_share: float, project_root: str) -> dict:
    """The body of a run's Ray task, on the node Ray placed it: record the slot, run `python -m lab _execute`
    in a child process until it exits, and stop the child (SIGTERM, then SIGKILL) if the task is cancelled.
    `db_url`: the dispatcher's store (its SQLite file in `results`, or the database server both use), without
    a password: the node's own setting supplies it (`node_db_url`)."""
    import ray

    db_url = node_db_url(db_url)

    if threading.current_thread() is threading.main_thread():
        # ray.cancel interrupts the task like Ctrl-C, which does nothing where SIGINT is ignored (a node started
        # in the background by a non-interactive shell passes SIG_IGN down to its workers)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    node = ray.get_runtime_context().get_node_id()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")]))
    if db_url.startswith("sqlite"):
        env.pop("LAB_DB_URL", None)  # the results folder's lab.db, whatever the node's own environment says
    else:
        env["LAB_DB_URL"] = db_url
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "") if gpu_share else ""
    if visible:
        slot, device = f"ray:{node[:8]}:gpu{visible}", "auto"   # its one GPU, or the CPU where it does not work
        gpus_here = next((n["Resources"].get("GPU", 1.0) for n in ray.nodes() if n["NodeID"] == node), 1.0)
        threads = max(1, int((os.cpu_count() or 1) * gpu_share / max(gpus_here, 1.0)))
    else:
        slot, device = f"ray:{node[:8]}:cpu", "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    store = Store(results, url=db_url, create=False)
    try:
        store.update_attempt(run_id, attempt, slot=slot)
    except LostRun as exc:  # cancelled, deleted or taken over while the task waited for its node
        return dict(node=node, slot=slot, returncode=None, skipped=str(exc))
    run_dir = store.run_dir(run_id)
    store.close()
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "lab", *args, "--device", device, "--threads", str(threads)]
    with open(run_dir / "log.txt", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=project_root, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        while proc.poll() is None:
            time.sleep(TASK_POLL_S)
    except BaseException as exc:  # ray.cancel raises KeyboardInterrupt here: stop the run as a signal would
        with open(run_dir / "log.txt", "a") as log:
            log.write(f"ray: the task was stopped ({type(exc).__name__}); stopping the run's process\n")
        _stop_child(proc)
        raise
    return dict(node=node, slot=slot, returncode=proc.returncode)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the task's worker process dies (Linux), so a run does not go
    on unwatched after its worker died, where Ray does not kill the worker's children itself."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_child(proc: subprocess.Popen) -> None:
    """SIGTERM (and SIGCONT, for a stopped process) to the child's process group: the run checkpoints and ends;
    SIGKILL after STOP_GRACE_S. A second cancel arriving meanwhile does not cut this short."""
    deadline = time.monotonic() + STOP_GRACE_S
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _signal_group(proc, sig)
    while proc.poll() is None:
        try:
            if time.monotonic() > deadline:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            else:
                time.sleep(TASK_POLL_S)
        except KeyboardInterrupt:
            continue


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class RayExecutor(Executor):
    """Runs attempts as Ray tasks on the cluster at `address` (HOST:PORT, ray://HOST:PORT, or 'auto': the one
    started on this host; default $RAY_ADDRESS or 'auto'). The share each run asks for is fixed when the
    executor starts (`share_for`: GPU shares if the cluster has GPUs then). Ray starts a task only where its
    share is free; the executor submits no more tasks than the live nodes hold, so a claimed run never waits
    long in Ray's queue looking `running`."""

    name = "ray"

    def __init__(self, store: Store, address: str | None = None, per_gpu: int = 1, cpus_per_run: float = 1,
                 device: str = "auto", data_dir: str | None = None, slots: int = 0) -> None:
        self.ray = ray = import_ray()
        self.max_runs = slots  # at most this many runs at once (0: as many as the cluster holds)
        self.store = store
        self.data_dir = data_dir
        self.address = address or os.environ.get("RAY_ADDRESS") or "auto"
        if self.address != "auto" and not self.address.startswith("ray://"):
            check_reachable(self.address)
        try:
            ray.init(address=self.address, namespace="lab", logging_level="ERROR", log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutorError(f"cannot connect to a Ray cluster at {self.address}: {text}") from None
        problem = sqlite_cluster_problem(store.url, ray.nodes())
        if problem:
            ray.shutdown()
            raise ExecutorError(problem)
        self.share = share_for(ray.cluster_resources().get("GPU", 0.0), per_gpu, cpus_per_run, device)
        self._task = ray.remote(max_retries=0, retry_exceptions=False)(run_attempt)
        self.tasks: dict[str, tuple[object, str, float]] = {}  # run id -> (object ref, attempt, submitted at)
        self._stopped: dict[str, float] = {}                  # run id -> when stop() cancelled its task

    def describe(self) -> str:
        what = (f"{self.share.gpus:g} GPU and {self.share.cpus:g} CPU per run" if self.share.gpus
                else f"{self.share.cpus:g} CPU per run, no GPUs")
        return f"Ray cluster at {self.address}: {self.capacity()} run(s) at once ({what})"

    def kind(self) -> str:
        return self.share.name

    def capacity(self) -> int:
        """Runs of this share that fit on the cluster's live nodes (their total resources), at most `slots`."""
        fits = sum(node_capacity(n["Resources"], self.share) for n in self.ray.nodes() if n["Alive"])
        return min(fits, self.max_runs) if self.max_runs else fits

    def free_slots(self) -> list:
        """Room for more runs, none while a SQLite store faces a cluster that grew past one node (said once)."""
        problem = sqlite_cluster_problem(self.store.url, self.ray.nodes())
        if problem:
            if not getattr(self, "_said_sqlite", False):
                print(f"ray: no more runs start: {problem}", flush=True)
                self._said_sqlite = True
            return []
        return [self.share] * max(0, self.capacity() - len(self.tasks))

    def submit(self, run: dict, slot) -> str:
        args = ["_execute", run["id"], "--attempt", run["attempt"], "--results", str(self.store.root.resolve())]
        if self.data_dir:
            args += ["--data", str(Path(self.data_dir).resolve())]
        ref = self._task.options(num_gpus=slot.gpus, num_cpus=slot.cpus, name=f"lab {run['id']}").remote(
            run["id"], run["attempt"], args, str(self.store.root.resolve()), task_db_url(self.store.url), slot.gpus,
            str(PROJECT_ROOT))
        self.tasks[run["id"]] = (ref, run["attempt"], time.time())
        task_ref = f"ray:{ref.task_id().hex()}"
        try:
            self.store.update_attempt(run["id"], run["attempt"], executor_ref=task_ref)
        except LostRun:
            pass  # cancelled or deleted already: the task finds out before it starts anything
        return f"as Ray task {task_ref[4:]} ({slot.name})"

    def poll(self) -> list[Ended]:
        if not self.tasks:
            return []
        refs = {ref: rid for rid, (ref, _, _) in self.tasks.items()}
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        ended = []
        for ref in ready:
            run_id = refs[ref]
            _, attempt, _ = self.tasks.pop(run_id)
            self._stopped.pop(run_id, None)
            why, details = self._outcome(ref)
            ended.append(Ended(run_id, attempt, why, details))
        return ended

    def _outcome(self, ref) -> tuple[str, dict]:
        exc_mod = self.ray.exceptions
        try:
            result = self.ray.get(ref, timeout=30)
        except exc_mod.NodeDiedError:
            return "its Ray node died", {}
        except exc_mod.TaskCancelledError:
            return "its Ray task was cancelled", {}
        except exc_mod.WorkerCrashedError:
            return "its Ray worker process died", {}
        except exc_mod.RayError as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            return f"its Ray task failed ({type(exc).__name__}: {first[:300]})", {}
        rc = result.get("returncode")
        if rc is None:
            return "its Ray task did not start it", result
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        return f"its process {how}", result

    def active(self) -> dict[str, str]:
        return {rid: attempt for rid, (_, attempt, _) in self.tasks.items()}

    def stop(self, run_id: str) -> None:
        """Cancel the run's task (its process gets SIGTERM, then SIGKILL after STOP_GRACE_S). The worker calls
        this every round until the task ends; a task still there well after that grace is killed with its Ray
        worker process (force)."""
        if run_id not in self.tasks:
            return
        ref = self.tasks[run_id][0]
        now = time.time()
        first = self._stopped.get(run_id)
        if first is not None and now - first < STOP_GRACE_S + 10:
            return  # the task is stopping its process
        force = first is not None  # still there long after its process's grace: kill its Ray worker
        self._stopped[run_id] = now
        try:
            self.ray.cancel(ref, force=force)
        except Exception as exc:  # a task that ended meanwhile; poll() collects it
            print(f"ray: cancelling the task of run {run_id}: {exc}", flush=True)

    def shutdown(self) -> list[tuple[str, str]]:
        """Cancel every task (each run checkpoints and records `interrupted`), wait for them to end, and
        disconnect; returns the attempts stopped."""
        stopped = list(self.active().items())
        for run_id in list(self.tasks):
            self.stop(run_id)
        deadline = time.time() + SHUTDOWN_WAIT_S
        while self.tasks and time.time() < deadline:
            self.poll()
            time.sleep(0.5)
        self.ray.shutdown()
        return stopped
