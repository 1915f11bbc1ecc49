"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class ClipBridgeError(Exception):
    """A failure the user caused or can fix: bad input, missing data, a wrong or corrupt cache.

    The message must say what went wrong and where (a path, a dataset, a class), in one line.
    """
