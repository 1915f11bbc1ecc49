"""Importing this package registers every method in bridge.registry.METHODS."""
from clipbridge.bridge.methods import (  # noqa: F401
    cmm,
    gda,
    linear_probe,
    tip_adapter,
    tip_adapter_f,
    zeroshot,
)
from clipbridge.bridge.methods.semobridge import closed_form, trained  # noqa: F401
from clipbridge.bridge.methods.ape import training_free as ape, trained as ape_t  # noqa: F401
from clipbridge.bridge.methods import clip_adapter  # noqa: F401
