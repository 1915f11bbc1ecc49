"""Importing this package registers every method in bridge.registry.METHODS."""
from clipbridge.bridge.methods import (  # noqa: F401
    cmm,
    gda,
    linear_probe,
    semobridge,
    semobridge_t,
    tip_adapter,
    tip_adapter_f,
    zeroshot,
)
