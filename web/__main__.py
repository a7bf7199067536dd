"""`python -m web [--config PATH] [--port N]`: the engine and the gallery, without Discord."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from types import FrameType

import waitress

from engine import ConfigError, Engine, EngineBridge, EngineError, Store, load_settings
from web import create_app

log = logging.getLogger("web")

WSGI_THREADS = 16  # live job pages hold one thread each while they stream events
CLOSE_TIMEOUT_S = 90.0


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # waitress closes its sockets and returns from run()


def main(argv: list[str] | None = None) -> int:
    """Load settings, start the engine on its own loop thread, serve the gallery."""
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--config", help="config.toml (default: offline defaults)")
    parser.add_argument("--port", type=int, help="serve the gallery on this port (web.port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"web": {"port": args.port}} if args.port is not None else None
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    store = Store(settings.engine.data_dir, busy_timeout_s=settings.engine.busy_timeout_s)
    engine = Engine(settings, store)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="imagine-engine", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(engine.start(), loop).result()
        app = create_app(settings, EngineBridge(engine, loop), store)
    except (ConfigError, EngineError) as error:
        print(f"cannot start: {error}", file=sys.stderr)
        loop.call_soon_threadsafe(loop.stop)
        return 3
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    web = settings.web
    log.info("gallery on http://%s:%d/", web.host, web.port)
    with contextlib.suppress(KeyboardInterrupt):
        waitress.serve(app, host=web.host, port=web.port, threads=WSGI_THREADS, ident="imagine")
    log.info("stopping: finishing or re-queueing the current job")
    asyncio.run_coroutine_threadsafe(engine.close(), loop).result(CLOSE_TIMEOUT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
