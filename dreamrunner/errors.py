"""The base of every error meant for the user: the CLI prints it and the UI shows it, without a traceback."""


class DreamRunnerError(Exception):
    pass


class UsageError(DreamRunnerError):
    """The command line asks for something that cannot be (options that do not go together, a value out of
    range): the CLI exits with status 2, as for argparse's own usage errors."""
