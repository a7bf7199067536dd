"""`python -m web [--config PATH] [--port N]`: the engine and the gallery, without Discord.

Wires the parts together: config → store → engine on its own loop thread → gallery server;
SIGTERM/SIGINT stop the gallery, then the engine (the running job finishes or is re-queued).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading

from engine import ConfigError, Engine, EngineBridge, EngineError, Store, load_settings
from web import serve_gallery

log = logging.getLogger("web")

CLOSE_TIMEOUT_S = 90.0


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
    engine = Engine(settings, Store(settings.engine.data_dir, settings.engine.busy_timeout_s))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="imagine-engine", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(engine.start(), loop).result()
        gallery = serve_gallery(settings, EngineBridge(engine, loop))
    except (ConfigError, EngineError) as error:
        print(f"cannot start: {error}", file=sys.stderr)
        loop.call_soon_threadsafe(loop.stop)
        return 3
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    code = 0
    if gallery.start():
        log.info("gallery on http://%s:%d/", settings.web.host, settings.web.port)
        stop.wait()
    else:
        code = 3
    gallery.stop()
    log.info("stopping: finishing or re-queueing the current job")
    asyncio.run_coroutine_threadsafe(engine.close(), loop).result(CLOSE_TIMEOUT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    return code


if __name__ == "__main__":
    sys.exit(main())
