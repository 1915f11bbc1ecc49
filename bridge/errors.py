"""Errors raised by the pure-tensor core.

The methods raise `BridgeInputError` (a ValueError: bad tensors or hyper-parameters); input the user
names by hand (a recipe, a file) is a `clipbridge.errors.ClipBridgeError`. The command line catches both
the same way and prints the one-line message.
"""


class BridgeInputError(ValueError):
    """Tensors handed to a method are unusable: wrong shapes, NaN/Inf, zero vectors, bad hyper-parameters."""
