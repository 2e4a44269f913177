"""The one exception type the CLI turns into a one-line message."""


class IFSegError(Exception):
    """A user-facing error: bad input, missing file, unsupported setting.

    The message must say what is wrong and what to do; the CLI prints it on one line
    and exits with status 2, without a traceback.
    """
