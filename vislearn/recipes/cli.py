"""``python -m vislearn.train`` (and ``vislearn train``): run any recipe, or list them.

    python -m vislearn.train --list
    python -m vislearn.train RECIPE [--preset P] [--out DIR] [--device D] [--seed S] [--threads N]
                             [--set KEY=VALUE ...] [--force] [--checkpoint-every STEPS] [--resume]

    torchrun --nproc-per-node N -m vislearn.train RECIPE ...   (data-parallel, gloo on CPU, nccl on CUDA)

Exit codes: 0 done, 1 failed (a checkpoint problem), 2 bad arguments, 130 interrupted. Every error
is one line on stderr, never a traceback; an interruption leaves every file on disk as it was.
Under torchrun only rank 0 prints and saves (after every rank finished training); an error names
the rank it happened on, and a rank that dies makes torchrun stop the others before anything is saved.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..config import DEVICES, PRESETS, ParameterError, check_int

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vislearn.train",
                                     description="Train a named recipe; with --out, save its checkpoint, history "
                                                 "and manifest entry (data/checkpoints for the bundled ones).")
    parser.add_argument("recipe", nargs="?", help="a recipe name (see --list)")
    parser.add_argument("--list", action="store_true", help="list every recipe with the notebook that uses it")
    parser.add_argument("--preset", default="auto", help=f"auto, {', '.join(PRESETS)} (default: auto)")
    parser.add_argument("--out", default=None, help="folder for the checkpoint and manifest (default: none, "
                                                    "nothing is saved)")
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICES)} (default: auto)")
    parser.add_argument("--seed", default="0", help="a non-negative integer (default: 0)")
    parser.add_argument("--threads", default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training-config field, e.g. --set epochs=5 (JSON values)")
    parser.add_argument("--force", action="store_true",
                        help="replace a checkpoint in --out made with a bigger preset (full by smoke)")
    parser.add_argument("--checkpoint-every", default="0", metavar="STEPS",
                        help="save the training state in --out every STEPS steps, for --resume (default: 0, never)")
    parser.add_argument("--resume", action="store_true",
                        help="carry on from the periodic checkpoint in --out of the same command")
    return parser


def parse_overrides(items: Sequence[str]) -> dict:
    """``["epochs=5", "lr=1e-3"]`` -> {"epochs": 5, "lr": 0.001}; values are JSON, else strings."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"--set {item!r} must look like KEY=VALUE, e.g. --set epochs=5")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def list_recipes() -> str:
    from . import all_recipes

    recipes = all_recipes()
    width = max(len(n) for n in recipes)
    return "\n".join(f"{name:<{width}}  {r.notebook:<28}  {r.description}" for name, r in recipes.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe command line; returns the exit code."""
    from ..train.distributed import rank_label
    from ..train.weights import CheckpointError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    try:
        if args.list:
            print(list_recipes())
            return EXIT_OK
        if not args.recipe:
            raise ParameterError("give a recipe name (python -m vislearn.train --list shows them)")
        return _train(args)
    except ParameterError as err:
        print(f"{rank_label()}error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as err:
        print(f"{rank_label()}error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        if args.checkpoint_every not in ("0", None) and args.out:
            print(f"{rank_label()}interrupted: no checkpoint was saved; the periodic one in --out is kept "
                  "(add --resume to the same command to carry on)", file=sys.stderr)
        else:
            print(f"{rank_label()}interrupted: nothing was saved, every file on disk is as it was", file=sys.stderr)
        return EXIT_INTERRUPTED


def _int_arg(name: str, text: str | None, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ParameterError(f"{name}={text!r} must be an integer >= {minimum}") from None
    return check_int(name, value, minimum=minimum)


def _train(args: argparse.Namespace) -> int:
    import torch

    from ..config import resolve_device
    from ..train import distributed
    from ..train.recipe import run
    from . import get

    recipe = get(args.recipe)
    seed = _int_arg("--seed", args.seed, 0)
    threads = _int_arg("--threads", args.threads, 1)
    every = _int_arg("--checkpoint-every", args.checkpoint_every, 0)
    if seed >= 2**63:
        raise ParameterError(f"--seed={seed} must be below 2**63")
    if threads:
        torch.set_num_threads(threads)
    overrides = parse_overrides(args.set)
    options = dict(out=args.out, device=args.device, seed=seed, overrides=overrides, force=args.force,
                   checkpoint_every=every, resume_run=args.resume)
    if not distributed.launched():
        trained = run(recipe, args.preset, **options)
    else:                                   # torchrun: join the group (gloo on CPU, nccl on CUDA) for the run
        with distributed.process_group(resolve_device(args.device)):
            trained = run(recipe, args.preset, progress=distributed.is_main(), **options)
            main_process = distributed.is_main()
        if not main_process:
            return EXIT_OK
    print(json.dumps(trained.metrics, indent=2))
    if args.out:
        print(f"saved: {trained.entry.get('file')} in {args.out}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
