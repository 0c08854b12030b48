"""The base of every error meant for the user: the CLI prints it and the UI shows it, without a traceback."""


class DreamRunnerError(Exception):
    pass
