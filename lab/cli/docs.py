"""docs/cli.md from the argparse parser: `python -m lab.cli.docs > docs/cli.md` (a test fails when it is stale)."""
from __future__ import annotations

import argparse
import os

HEADER = """# Command-line reference

Generated from the lab's argparse parser by `python -m lab.cli.docs > docs/cli.md`; do not edit by hand.
`lab` is the same as `python -m lab`. Every command that reads or writes runs takes `--results DIR` (default:
$LAB_RESULTS or results/). A mistake or a refusal is one line on stderr (`error: ...`) and exit status 2.
"""
WIDTH = "100"   # help text wrapped at this many columns, whatever the terminal


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each listed subcommand (those with help: `_execute` is the worker's, not listed)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            return [(name, helps[name], p) for name, p in action.choices.items() if name in helps]
    return []


def _section(name: str, help_text: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} lab {name}", "", help_text[:1].upper() + help_text[1:] + ".", "", "```text",
             parser.format_help().rstrip(), "```", ""]
    for sub_name, sub_help, sub in _subcommands(parser):
        lines += _section(f"{name} {sub_name}", sub_help, sub, level + 1)
    return lines


def render() -> str:
    """The whole reference as Markdown."""
    from . import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser(prog="lab")
        lines = [HEADER, "```text", parser.format_help().rstrip(), "```", ""]
        for name, help_text, sub in _subcommands(parser):
            lines += _section(name, help_text, sub, 2)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
