"""Errors raised by the pure-tensor core.

`bridge/` imports nothing but torch, so it cannot use `cache.errors.ClipBridgeError`; the command line
catches `BridgeInputError` the same way and prints its one-line message.
"""


class BridgeInputError(ValueError):
    """Tensors handed to a method are unusable: wrong shapes, NaN/Inf, zero vectors, bad hyper-parameters."""
