"""The one exception type the command line turns into a one-line message and a non-zero exit.

It lives at the package root, below every stage, so that cache, bridge, extract and evaluate may all raise
it (bridge's tensor checks raise bridge.errors.BridgeInputError, which the command line treats alike).
"""


class ClipBridgeError(Exception):
    """A failure the user caused or can fix: bad input, missing data, a wrong or corrupt cache.

    The message must say what went wrong and where (a path, a dataset, a class), in one line.
    """
