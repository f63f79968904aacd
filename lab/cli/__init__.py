"""The `lab` command (also `python -m lab`): `lab COMMAND --help` for each command.

Each command group registers its commands (`register(subparsers)`); the flags they share, the store opening and
the progress bar live in `lab.cli.shared`. Heavy imports happen inside the commands, so `lab --help` stays quick.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import LabError, UsageError
from . import analysis, runs, studies, tools

# in the order `lab --help` lists them
GROUPS = (runs, tools, analysis, studies)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (no usage dump): 'error: ...', exit status 2."""

    def error(self, message):
        raise UsageError(f"{message} ({self.prog} --help lists what is allowed)")


def build_parser(prog: str = "python -m lab") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Degradation Lab: plain vs residual nets (He et al. 2015).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; a mistake or a refusal is one line on stderr ('error: ...') and exit status 2."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except LabError as exc:
        return error(str(exc))
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return error(f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        return 130


def error(text: str) -> int:
    """Print `text` as one 'error: ...' line on stderr (control characters made visible); returns 2."""
    from ..runs.monitor import printable

    lines = [ln for ln in text.strip().splitlines() if ln.strip()] or ["unknown error"]
    print(f"error: {printable(' '.join(ln.strip() for ln in lines))}", file=sys.stderr)
    return 2


def entry() -> None:
    """The `lab` console command (pyproject.toml): the same as `python -m lab`."""
    sys.exit(main())
