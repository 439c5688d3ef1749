"""The ``vislearn`` command: run the notebook series, list it, or train a recipe.

    vislearn run [NOTEBOOK ...] [--preset P] [--device D] [--out DIR] [--timeout SECONDS]
    vislearn list
    vislearn train RECIPE [...]        # the same as: python -m vislearn.train RECIPE [...]
    vislearn train --list              # every recipe, with the notebook that uses it

Exit codes: 0 when everything ran, 1 when a notebook (or training) failed, 2 for bad arguments, 130
when interrupted (Ctrl-C or SIGTERM: results.json and the report are written first).
A bad parameter is one line on stderr (``error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import DEVICES, PRESETS, ParameterError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands (``train`` only appears here for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="vislearn", description="An interactive, notebook-first course in modern computer vision.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", help="execute notebooks with papermill and write a report",
        description="Execute the notebooks (default: the whole series, in order) and write the executed "
                    "notebooks, their figures, results.json and report.md/report.html into one run folder.")
    run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                     help="01, 01_vit_from_scratch, 01_vit_from_scratch.ipynb or a path (default: all)")
    run.add_argument("--preset", default="auto", choices=("auto",) + PRESETS,
                     help="auto: $VISLEARN_PRESET if set, else full on CUDA, else classroom (default: auto)")
    run.add_argument("--device", default="auto", choices=DEVICES, help="default: auto")
    run.add_argument("--out", metavar="DIR",
                     help="run folder (default: runs/<YYYYmmdd-HHMMSS>-<preset>/ under the current folder)")
    run.add_argument("--timeout", metavar="SECONDS",
                     help="fail a notebook when one of its cells runs longer than this many whole seconds "
                          "(default: no limit)")
    run.add_argument("--force", action="store_true",
                     help="add to a run folder that already holds a run (earlier results are kept; a notebook "
                          "is replaced only by a successful rerun)")
    _add_notebooks_dir(run)
    run.add_argument("--quiet", action="store_true", help="no progress bar and no per-notebook lines")

    listing = commands.add_parser("list", help="list the notebooks of the series with their titles")
    _add_notebooks_dir(listing)

    site = commands.add_parser(
        "site", help="build the static website of an executed run (Jupyter Book, offline)",
        description="Build a static website of the course from a run folder of `vislearn run`: the executed "
                    "notebooks in series order, the run's report and the README's table, with a search box.")
    site.add_argument("--run", metavar="DIR", help="the run folder (default: the newest under runs/)")
    site.add_argument("--out", metavar="DIR", help="where the site goes (default: <run>/site)")

    commands.add_parser("train", add_help=False, help="train a recipe: vislearn train RECIPE [...] "
                                                      "(see: vislearn train --help)")
    return parser


def _add_notebooks_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebooks-dir", metavar="DIR",
                        help="folder holding the NN_*.ipynb series (default: the repository's notebooks/)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vislearn`` command line; returns the exit code (0 ok, 1 failed, 2 bad arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train"]:  # forwarded untouched, options included, to the training CLI
            return _train(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse already printed the usage and the error
            return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
        if args.command == "list":
            return _list(args)
        if args.command == "site":
            return _site(args)
        return _run(args)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .runner import run_series

    try:
        summary = run_series(args.notebooks or None, preset=args.preset, device=args.device, out=args.out,
                             timeout=_timeout(args.timeout), progress=not args.quiet,
                             notebooks_dir=args.notebooks_dir, force=args.force)
    except KeyboardInterrupt:
        print("interrupted: results.json and the report hold every notebook that ran, the interrupted one "
              "marked 'interrupted'", file=sys.stderr)
        return EXIT_INTERRUPTED
    notebooks = summary.results["notebooks"]
    print(f"{len(notebooks) - len(summary.failed)} of {len(notebooks)} notebooks ran "
          f"(preset {summary.results['preset']}, {summary.results['seconds']:.0f} s)"
          + (f"; failed: {', '.join(summary.failed)}" if summary.failed else ""))
    print(f"report: {summary.report_html}")
    print(f"        {summary.report_md}")
    return EXIT_OK if summary.ok else EXIT_FAILED


def _timeout(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"--timeout={text!r} must be a positive whole number of seconds") from None
    return int(value) if value.is_integer() and value >= 1 else value  # run_series names a bad one


def _list(args: argparse.Namespace) -> int:
    from .notebooks import available_notebooks, default_notebooks_dir, notebook_title

    folder = Path(args.notebooks_dir) if args.notebooks_dir else default_notebooks_dir()
    if not folder.is_dir():
        raise ParameterError(f"--notebooks-dir {folder} is not a folder")
    paths = available_notebooks(folder)
    if not paths:
        raise ParameterError(f"no notebooks matching NN_*.ipynb in {folder}")
    width = max(len(p.stem) for p in paths)
    for path in paths:
        print(f"{path.stem:<{width}}  {notebook_title(path)}")
    return EXIT_OK


def _site(args: argparse.Namespace) -> int:
    from .site import build_site

    build_site(args.run, args.out, quiet=False)
    return EXIT_OK


def _train(argv: list[str]) -> int:
    from ..recipes import cli as recipe_cli  # imported lazily: it pulls in the models and the data

    try:
        code = recipe_cli.main(argv)
    except SystemExit as exc:  # an argparse-based main exits instead of returning
        code = exc.code
    if code is None:
        return EXIT_OK
    if isinstance(code, str):  # sys.exit("message"): Python would print it, so do we
        print(code, file=sys.stderr)
        return EXIT_FAILED
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
