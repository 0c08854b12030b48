"""`dreamrunner` / `python -m dreamrunner`: one subcommand module per stage, each with `register(subparsers)`.

Conventions shared by every command: exit status 0 (done), 1 (a runtime failure: a `DreamRunnerError` or an
OS error, printed as one `error: ...` line without a traceback), 2 (a usage error, from argparse) and 130
(cancelled with Ctrl-C; what finished is kept). Global options (`--quiet`, `--json`, `--offline`) go before
or after the command name; output goes through one `Reporter` (cli/output.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import DreamRunnerError, UsageError
from ..jobs import Cancelled
from . import (
    edit_commands,
    eval_commands,
    planning_commands,
    prior_commands,
    project_commands,
    render_commands,
    retrieval_commands,
    story_commands,
)
from .output import Reporter

# One module per stage, in pipeline order; each module's register() adds its subcommands.
COMMAND_MODULES = [story_commands, project_commands, planning_commands, edit_commands, retrieval_commands,
                   prior_commands, render_commands, eval_commands]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On the commands the defaults are SUPPRESS, so `dreamrunner --json render` and `dreamrunner render --json`
    # both work and a command does not reset what was given before its name.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="print results and warnings only (no progress bars or notes)")
    output.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable output: one JSON object per line on stdout (progress, stages, results)")
    parser.add_argument("--offline", action="store_true", default=default(False),
                        help="no network: models only from local folders and the Hugging Face cache "
                             "(HF_HUB_OFFLINE=1), and the offline planner")


def _leaves(parser: argparse.ArgumentParser):
    """Every parser that runs a command (nested command groups included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _leaves(child) if child._subparsers is not None else [child]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamrunner",
        description="DreamRunner Studio: plan, tune, render and export multi-scene story videos. "
                    "`dreamrunner story` runs the whole pipeline; `dreamrunner app` starts the editor.",
        epilog="Exit status: 0 done, 1 failed (the message says why), 2 wrong usage, 130 cancelled (Ctrl-C).",
    )
    parser.add_argument("--version", action="version", version=f"dreamrunner {__version__}")
    _global_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    for leaf in _leaves(parser):
        _global_options(leaf, top=False)
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
                    raise UsageError(f"the {name.replace('_', ' ')} argument is not valid UTF-8 text: '{shown}'; "
                                           "give it in UTF-8 (check the terminal's or the script's encoding)") from None


def go_offline() -> None:
    """HF_HUB_OFFLINE for this process: loaders read the cache only and fail at once instead of retrying."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:  # read at import: set the constant too
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True


def _quiet_libraries() -> None:
    # The libraries' own bars and log lines (transformers' "Loading weights", hub downloads) would interleave
    # with ours; our reporter shows the job's progress instead.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers imports torchao (the [quant] extra) when it is installed, and torchao then says on every command
    # which of its optional kernels do not load on this machine, and torch that torchao registers an Enum the old
    # way: neither is the user's concern. Errors still show.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _os_message(error: OSError) -> str:
    reason = error.strerror or str(error) or type(error).__name__
    names = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{reason}: {' -> '.join(names)}" if names else reason


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:  # the editor parses its own options
        return story_commands.launch_app(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = Reporter("json" if args.json else "quiet" if args.quiet else "bars")
    args.reporter = reporter
    _quiet_libraries()
    if args.offline:
        go_offline()
    try:
        check_text_arguments(args)
        return int(args.run(args) or 0)
    except Cancelled as error:
        reporter.error(f"{error}; what finished is kept: run the same command again to go on", cancelled=True)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        reporter.error("cancelled; run the same command again to go on", cancelled=True)
        return EXIT_CANCELLED
    except UsageError as error:
        reporter.error(f"{error} (see dreamrunner {args.command} --help)")
        return EXIT_USAGE
    except DreamRunnerError as error:
        reporter.error(str(error))
        return EXIT_FAILED
    except OSError as error:
        reporter.error(_os_message(error))
        return EXIT_FAILED
    finally:
        reporter.close_bar()
