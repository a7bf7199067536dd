"""`python -m bot [--config PATH]`: the main program (engine, gallery and Discord)."""

from __future__ import annotations

import argparse
import sys

from bot.runtime import main as run


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the program; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="config.toml (defaults when left out)")
    return run(parser.parse_args(argv).config)


if __name__ == "__main__":
    sys.exit(main())
