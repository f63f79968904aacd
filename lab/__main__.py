"""`python -m lab`: the same as the `lab` command (lab.cli)."""
from .cli import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]

if __name__ == "__main__":
    entry()
