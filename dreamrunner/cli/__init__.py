"""`dreamrunner` / `python -m dreamrunner`: one subcommand module per stage, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys

from ..errors import DreamRunnerError
from . import (
    edit_commands,
    eval_commands,
    planning_commands,
    prior_commands,
    project_commands,
    render_commands,
    retrieval_commands,
)

# One module per stage, in pipeline order; each module's register() adds its subcommands.
COMMAND_MODULES = [project_commands, planning_commands, edit_commands, retrieval_commands, prior_commands,
                   render_commands, eval_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamrunner",
        description="DreamRunner Studio: plan, tune, render and export multi-scene story videos.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except DreamRunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
