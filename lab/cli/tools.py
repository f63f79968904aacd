"""The other commands: `models`, `bench`, `export`, `dashboard` and `demo`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError, UsageError
from .shared import add_data, add_results, add_slot_flags, check_slots, open_store

# `make dashboard`'s settings (.streamlit/config.toml), passed as flags so that `lab dashboard` behaves the same
# from any folder; the file next to dashboard.py, where there is one, is read instead.
DASHBOARD_SETTINGS = {
    "server.address": "127.0.0.1", "server.port": 8501, "server.headless": True,
    "server.enableXsrfProtection": True, "server.fileWatcherType": "none", "server.runOnSave": False,
    "browser.gatherUsageStats": False, "browser.serverAddress": "127.0.0.1",
    "client.toolbarMode": "minimal", "client.showErrorDetails": "none", "logger.level": "warning",
    "theme.base": "light",
}


def cmd_models(args) -> int:
    from ..models import count_parameters, create_model, list_models

    for name in list_models(args.pattern):
        net = create_model(name)
        print(f"{name:<12} {count_parameters(net):>12,} parameters ({net.spec.num_classes} classes, "
              f"{net.spec.family} family)")
    return 0


def cmd_bench(args) -> int:
    from ..bench import main as bench_main

    return bench_main(args)


def cmd_export(args) -> int:
    from ..export import cli_export

    return cli_export(args)


def dashboard_script() -> Path:
    """dashboard.py: next to the lab package (a checkout, an editable install), else the installed module."""
    beside = Path(__file__).resolve().parents[2] / "dashboard.py"
    if beside.is_file():
        return beside
    import importlib.util

    spec = importlib.util.find_spec("dashboard")
    if spec is None or not spec.origin or not spec.origin.endswith("dashboard.py"):
        raise ConfigError("dashboard.py is not installed next to the lab package; reinstall the lab "
                          "(pip install -e .) or run `streamlit run dashboard.py` in its folder")
    return Path(spec.origin)


def dashboard_settings(script: Path) -> dict:
    """The Streamlit settings of `make dashboard`: the .streamlit/config.toml beside the script, flattened to
    'section.option' keys, else DASHBOARD_SETTINGS."""
    import tomllib

    path = script.parent / ".streamlit" / "config.toml"
    if not path.is_file():
        return dict(DASHBOARD_SETTINGS)
    with open(path, "rb") as f:
        toml = tomllib.load(f)
    return {f"{section}.{key}": value for section, options in toml.items() for key, value in options.items()}


def dashboard_command(args) -> tuple[list[str], dict]:
    """The `streamlit run` command line and environment that `lab dashboard` starts."""
    from ..dashboard_address import ALLOW_REMOTE_ENV, address_problem, is_loopback
    from ..runs.store import default_results_dir

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, got {args.port}")
    problem = address_problem(args.address, allow_remote=False)
    if problem and not args.allow_remote:
        raise UsageError(problem)
    script = dashboard_script()
    settings = dashboard_settings(script) | {"server.address": args.address, "server.port": args.port}
    if not is_loopback(args.address) and args.address not in ("0.0.0.0", "::"):
        settings["browser.serverAddress"] = args.address
    flags = [f"--{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in settings.items()]
    results = str(Path(args.results or default_results_dir()).resolve())
    env = {**os.environ, "LAB_RESULTS": results}
    env.pop(ALLOW_REMOTE_ENV, None)
    if not is_loopback(args.address):
        env[ALLOW_REMOTE_ENV] = "1"
    return [sys.executable, "-m", "streamlit", "run", str(script), *flags, "--", "--results", results], env


def cmd_dashboard(args) -> int:
    from ..dashboard_address import is_loopback, remote_warning

    command, env = dashboard_command(args)
    if not is_loopback(args.address):
        print(f"warning: {remote_warning(args.address)}", file=sys.stderr)
    print(f"dashboard on http://{args.address}:{args.port} (results: {env['LAB_RESULTS']}); Ctrl-C stops it",
          file=sys.stderr)
    return subprocess.run(command, env=env).returncode


def cmd_demo(args) -> int:
    from ..demo import run_demo

    check_slots(args.slots, 1)
    return run_demo(open_store(args), data=args.data, slots=args.slots)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="images/s of the lab trainer vs a usual DataLoader loop (prints figures)")
    b.add_argument("--depths", default="20,56", help="ResNet depths to measure")
    b.add_argument("--iterations", type=int, default=0, help="timed iterations per measurement (0: 30 on the CPU, "
                                                             "300 on a GPU)")
    b.add_argument("--repeats", type=int, default=0, help="timed windows per trainer figure, the median is shown "
                                                          "(0: 1 on the CPU, 3 on a GPU)")
    b.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    b.add_argument("--device", default="auto")
    b.add_argument("--sweep", action="store_true", help="also measure a sweep: on the CPU aggregate images/s with "
                                                        "slots 1 and 2; on a GPU each compile mode and packed runs")
    b.add_argument("--modes", default="off,default,reduce-overhead,max-autotune",
                   help="GPU sweep: compile modes to measure ('off': eager)")
    b.add_argument("--packed", default="1,2,4,8", help="GPU sweep: runs at once on the GPU, one process each (0: none)")
    b.add_argument("--gpu-sweep", action="store_true", help="the GPU sweep's measurements on any device (a dry run "
                                                            "on the CPU)")
    b.set_defaults(func=cmd_bench)


def register(sub) -> None:
    """Add `models`, `bench`, `export`, `dashboard` and `demo` to the lab's subcommands."""
    m = sub.add_parser("models", help="list registered models and their parameter counts")
    m.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    m.set_defaults(func=cmd_models)

    _add_bench(sub)

    e = sub.add_parser("export", help="figures (PNG/SVG/PDF), their data (CSV) and a report zip")
    e.add_argument("runs", nargs="*", metavar="RUN", help="run ids (default: all finished or running runs)")
    e.add_argument("--figures", default="curves,depth,responses,gradients",
                   help="comma-separated: curves, depth, responses, gradients")
    e.add_argument("--formats", default="png,svg,pdf,csv", help="comma-separated: png, svg, pdf, csv, html")
    e.add_argument("--out", default="export", help="output folder, or a .zip path for a report bundle")
    e.add_argument("--reference", action="store_true", help="overlay published numbers on the depth figure")
    add_results(e)
    e.set_defaults(func=cmd_export)

    d = sub.add_parser("dashboard", help="start the dashboard (Streamlit) on http://127.0.0.1:8501, as `make "
                                         "dashboard` does, from any folder")
    d.add_argument("--port", type=int, default=DASHBOARD_SETTINGS["server.port"], help="port to listen on")
    d.add_argument("--address", default=DASHBOARD_SETTINGS["server.address"],
                   help="address to listen on; one other than this machine's loopback needs --allow-remote")
    d.add_argument("--allow-remote", action="store_true",
                   help="let a non-loopback --address through: whoever reaches it can queue and delete runs (the "
                        "dashboard has no login; an SSH tunnel is the safer way to reach it from elsewhere)")
    add_results(d)
    d.set_defaults(func=cmd_dashboard)

    q = sub.add_parser("demo", help="the quick demo from a shell: plain and residual nets at 20 and 56 layers, "
                                    "with a progress bar, ending with the verdict")
    add_slot_flags(q, what="(the demo's worker)", per_gpu=False)
    add_data(q)
    add_results(q)
    q.set_defaults(func=cmd_demo)

