"""`python -m bot [--config PATH] [--port N]`: the main program (engine, gallery and Discord)."""

from __future__ import annotations

import argparse
import sys

from bot.runtime import main as run


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the program; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="config.toml (defaults when left out)")
    parser.add_argument("--port", type=int, help="serve the gallery on this port (web.port)")
    args = parser.parse_args(argv)
    return run(args.config, {"web": {"port": args.port}} if args.port is not None else None)


if __name__ == "__main__":
    sys.exit(main())
