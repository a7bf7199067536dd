"""`python -m engine.demo train|eval`: train the demo model, or measure how well it follows."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.demo.evaluate import MODEL_DIR
from engine.demo.train import BASE_MINUTES, Recipe


def parse(argv: list[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m engine.demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a demo model into a folder")
    train.add_argument("--out", type=Path, required=True, help="folder for the pipeline")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--minutes",
        type=float,
        default=BASE_MINUTES,
        help=f"budget; step counts scale with it (default {BASE_MINUTES:g})",
    )
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.add_argument("--device", default="cpu")
    train.add_argument(
        "--kind",
        choices=("txt2img", "inpaint"),
        default="txt2img",
        help="inpaint: the inpainting twin, trained from --base",
    )
    train.add_argument(
        "--base", type=Path, default=MODEL_DIR, help="with --kind inpaint: the txt2img folder"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one recipe setting, e.g. --set steps=3000 --set unet_channels=32,64,96",
    )
    evaluate = commands.add_parser("eval", help="generate, read back, print accuracies")
    evaluate.add_argument("--model", type=Path, default=MODEL_DIR)
    evaluate.add_argument("--n", type=int, default=100, help="captions each, seen and held out")
    evaluate.add_argument("--seed", type=int, default=1234)
    evaluate.add_argument("--sheet", type=Path, default=Path("demo-samples.png"))
    evaluate.add_argument(
        "--guidance", type=float, default=None, help="default: the model folder's own"
    )
    evaluate.add_argument("--steps", type=int, default=None, help="default: the model folder's own")
    evaluate.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    evaluate.add_argument(
        "--kind",
        choices=("txt2img", "inpaint"),
        default="txt2img",
        help="inpaint: fill hidden shapes and zoom-out borders with the twin (--model)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its result as JSON."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command == "train" and args.kind == "inpaint":
        return _train_inpaint(args)
    if args.command == "train":
        recipe = Recipe(seed=args.seed, threads=args.threads, device=args.device)
        try:
            recipe = recipe.scaled(args.minutes).with_settings(args.set)
        except (TypeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        from engine.demo.train import train

        record = train(recipe, args.out)
        print(json.dumps({k: record[k] for k in ("minutes", "vae_minutes")}))
        return 0
    import torch

    from engine.demo.evaluate import (
        evaluate,
        load_pipeline,
        model_defaults,
        seconds_per_image,
        seed_spread,
        text_probe,
        vae_round_trip,
    )

    torch.set_num_threads(args.threads)

    if args.kind == "inpaint":
        return _eval_inpaint(args)
    steps, guidance = model_defaults(args.model)
    steps = steps if args.steps is None else args.steps
    guidance = guidance if args.guidance is None else args.guidance
    pipe = load_pipeline(args.model)
    result = evaluate(pipe, args.n, args.seed, args.sheet, guidance, steps)
    result["steps"], result["guidance"] = steps, guidance
    result["seconds_per_image"] = seconds_per_image(pipe, steps, guidance)
    result["seed_spread"] = seed_spread(pipe, steps=steps, guidance=guidance)
    result["text_probe"] = text_probe(pipe)
    result["vae_round_trip"] = vae_round_trip(pipe)
    print(json.dumps(result, indent=1))
    return 0


def _train_inpaint(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from engine.demo.inpaint import InpaintRecipe, train_inpaint

    recipe = InpaintRecipe(seed=args.seed, threads=args.threads)
    try:
        steps = max(10, round(recipe.steps * args.minutes / BASE_MINUTES))
        recipe = replace(recipe, steps=steps) if args.minutes != BASE_MINUTES else recipe
        for setting in args.set:
            name, _, text = setting.partition("=")
            if not hasattr(recipe, name) or name == "sizes":
                raise ValueError(f"--set {setting!r}: expected name=value with a recipe field")
            recipe = replace(recipe, **{name: type(getattr(recipe, name))(text)})
    except (TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = train_inpaint(recipe, args.base, args.out)
    print(json.dumps({"minutes": record["minutes"]}))
    return 0


def _eval_inpaint(args: argparse.Namespace) -> int:
    import torch

    from engine.demo.evaluate import model_defaults
    from engine.demo.inpaint import evaluate_inpaint, load_inpaint_pipeline

    torch.set_num_threads(args.threads)
    steps, guidance = model_defaults(args.model)
    steps = steps if args.steps is None else args.steps
    guidance = guidance if args.guidance is None else args.guidance
    pipe = load_inpaint_pipeline(args.model)
    result = evaluate_inpaint(pipe, args.n, args.seed, args.sheet, guidance, steps)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
