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


def check_text_arguments(args: argparse.Namespace) -> None:
    """Refuse arguments that are not valid UTF-8: Python hands undecodable command-line bytes over as
    unpaired surrogates, which no project file, log or LLM request can carry."""
    for name, value in vars(args).items():
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                    raise DreamRunnerError(f"the {name.replace('_', ' ')} argument is not valid UTF-8 text: '{shown}'; "
                                           "give it in UTF-8 (check the terminal's or the script's encoding)") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_text_arguments(args)
        return int(args.run(args) or 0)
    except DreamRunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
