"""Command line: `python -m engine generate PROMPT ...`, `python -m engine check-config PATH`,
and `python -m engine worker --config PATH` (a GPU box serving a front over Celery + Redis)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from engine import config as config_mod
from engine.engine import Engine
from engine.errors import ConfigError, EngineError, ModelUnavailable
from engine.events import Failed, Finished, Progress
from engine.request import GenerationRequest, Requester
from engine.store import Store


def main(argv: list[str] | None = None) -> int:
    """Run the engine command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: stacks to stderr
    try:
        if args.command == "check-config":
            return _check_config(args.path)
        if args.command == "worker":
            return _worker(args)
        return asyncio.run(_generate(args))
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    except ModelUnavailable as error:
        print(f"model unavailable: {error}", file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="generate images from a prompt")
    generate.add_argument("prompt")
    generate.add_argument("--out", required=True, help="output PNG (several: -1, -2 suffixes)")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--steps", type=int)
    generate.add_argument("--guidance", type=float)
    generate.add_argument("--negative", default="")
    generate.add_argument("--width", type=int)
    generate.add_argument("--height", type=int)
    generate.add_argument("--count", type=int)
    generate.add_argument("--scheduler")
    generate.add_argument("--config", help="config.toml (default: offline defaults)")
    generate.add_argument(
        "--model", help="a model name from the config, or a model folder, hub id or .safetensors"
    )
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("path")
    worker = commands.add_parser("worker", help="serve this box's GPUs to a front over Redis")
    worker.add_argument("--config", required=True, help="config.toml with engine.broker_url")
    worker.add_argument("--name", help="this box's name (default engine.box_name or the host)")
    return parser


def _worker(args: argparse.Namespace) -> int:
    """Load this box's models and serve them until SIGTERM; one clear line on a bad broker."""
    import redis

    from engine.box import Box

    logging.getLogger().setLevel(logging.INFO)
    settings = config_mod.load(args.config)
    if not settings.broker_url:
        raise ConfigError("engine.broker_url", "a worker box needs the front's broker URL")
    box = Box(settings, args.name)
    try:
        box.redis.ping()
    except redis.AuthenticationError as error:
        print(f"imagine worker: the broker refused the password: {error}", file=sys.stderr)
        return 2
    except redis.RedisError as error:
        print(f"imagine worker: broker unreachable: {error}", file=sys.stderr)
        return 2
    box.start()
    box.serve()
    return 0


def _check_config(path: str) -> int:
    settings = config_mod.load(path)
    names = ", ".join(settings.models) or settings.engine.model
    print(f"{path}: ok (model {names}, data in {settings.engine.data_dir})")
    return 0


async def _generate(args: argparse.Namespace) -> int:
    settings = config_mod.load(args.config)
    scratch = tempfile.mkdtemp(prefix="imagine-cli-")
    engine_settings = dataclasses.replace(settings.engine, data_dir=scratch)
    if args.model and args.model not in settings.models:  # a path or hub id, not a name
        engine_settings = dataclasses.replace(engine_settings, model=args.model)
        settings = dataclasses.replace(settings, models={})
    settings = dataclasses.replace(settings, engine=engine_settings)
    engine = Engine(settings, Store(scratch))
    try:
        await engine.start()
        return await _run_one(engine, args)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        await engine.close()
        shutil.rmtree(scratch, ignore_errors=True)


async def _run_one(engine: Engine, args: argparse.Namespace) -> int:
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        count=args.count,
        scheduler=args.scheduler,
        model=args.model if args.model in engine.registry.names() else None,
    )
    job = await engine.submit(request, Requester(source="cli", user_id="local", name="cli"))
    bar = tqdm(total=job.request.steps, unit="step", desc="generating")
    async for event in engine.events(job.id):
        if isinstance(event, Progress):
            bar.total = event.total
            bar.n = event.step
            bar.refresh()
        elif isinstance(event, Failed):
            bar.close()
            print(f"failed: {event.reason}", file=sys.stderr)
            return 1
        elif isinstance(event, Finished):
            bar.close()
            _copy_out(engine, event, Path(args.out))
    return 0


def _copy_out(engine: Engine, event: Finished, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(event.images):
        target = out if len(event.images) == 1 else out.with_stem(f"{out.stem}-{index + 1}")
        shutil.copyfile(engine.store.image_path(image.file_name), target)
        print(f"{target} (seed {image.seed}, {image.width}×{image.height}, {image.model})")


if __name__ == "__main__":
    sys.exit(main())
