"""`python -m bot [--config PATH] [--port N]`: the main program (engine, gallery and Discord).

Wires the parts together, nothing more: config → store → engine (its workers) → gallery →
Discord client, run by `bot.runtime.Runtime`.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys

from bot.runtime import Runtime, fatal
from engine import ConfigError, Engine, EngineBridge, Store, load_settings
from web import GalleryServer, serve_gallery


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the program; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="config.toml (defaults when left out)")
    parser.add_argument("--port", type=int, help="serve the gallery on this port (web.port)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: stacks to stderr
    overrides = {"web": {"port": args.port}} if args.port is not None else None
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as error:
        return fatal(f"config error: {error}")
    engine = Engine(settings, Store(settings.engine.data_dir, settings.engine.busy_timeout_s))

    def gallery(bridge: EngineBridge) -> GalleryServer:
        return serve_gallery(settings, bridge)

    return asyncio.run(Runtime(settings, engine, gallery, args.config, overrides).run())


if __name__ == "__main__":
    sys.exit(main())
