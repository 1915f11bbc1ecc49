"""One registry of methods, one signature (in the spirit of timm's `register_model`).

    state  = REGISTRY[name].fit(task, **hparams)   # task: bridge.task.FewShotTask, S seeds at once
    logits = REGISTRY[name].logits(state, queries) # queries [N, D] or [S, N, D] raw -> [S, N, C]

No method reads files, prints, or knows about HDF5. A method that needs an optional input of the task
(bridge.task.OPTIONAL_INPUTS, e.g. "eos": the EOS features and Wt, which a cache of a CoCa-style or HF
text tower may lack) lists it in `needs`; `unmet_needs` tells a caller (bench) beforehand, and
`require_inputs` is the one-line refusal a method's fit starts with. A method that never reads the support
set (zero-shot CLIP) says so with `reads_support = False`: the task it is fitted on may then hold none (a
cache without the few-shot images of the pairs asked for still serves it; `reads_support`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.task import OPTIONAL_INPUTS


@dataclass
class FittedState:
    """What `fit` returns; small enough to save under runs/.

    method    registry name
    tensors   named tensors the method's `logits` needs (leading dim S where per seed)
    hparams   one dict per seed: the hyper-parameters used or chosen on validation (JSON-able)
    info      JSON-able extras: val_accuracy (list of S floats), fit_seconds, search_seconds, ...
    """

    method: str
    tensors: dict[str, Tensor]
    hparams: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)

    def on(self, device: str) -> "FittedState":
        """This state with its tensors on `device` (itself when they are all there already)."""
        if all(str(t.device) == device or (device == "cpu" and t.device.type == "cpu") for t in self.tensors.values()):
            return self
        return FittedState(self.method, {k: t.to(device) for k, t in self.tensors.items()}, self.hparams, self.info)


class Method(Protocol):
    name: str
    summary: str                   # one line saying what the method does
    defaults: dict[str, Any]
    needs: frozenset[str]          # optional task inputs the method cannot do without (may be absent: none)
    reads_support: bool            # False: fit never reads task.support (may be absent: True)

    def fit(self, task, **hparams) -> FittedState: ...

    def logits(self, state: FittedState, queries: Tensor) -> Tensor: ...


REGISTRY: dict[str, Method] = {}


def register_method(cls):
    """Class decorator: instantiate and register under `cls.name`."""
    instance = cls()
    if instance.name in REGISTRY:
        raise RuntimeError(f"method {instance.name!r} registered twice")
    REGISTRY[instance.name] = instance
    return cls


def get_method(name: str) -> Method:
    import clipbridge.bridge.methods  # noqa: F401  (registers every method)

    try:
        return REGISTRY[name]
    except KeyError:
        raise BridgeInputError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def method_summary(method: Method) -> str:
    """The method's one-line description (its `summary`, else its module docstring's first line)."""
    summary = getattr(method, "summary", "")
    if summary:
        return summary
    import sys

    doc = (sys.modules[type(method).__module__].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def unmet_needs(method: Method, available: Iterable[str]) -> list[str]:
    """The optional inputs `method` needs that are not in `available` (a task's `inputs`), sorted."""
    return sorted(set(getattr(method, "needs", ())) - set(available))


def reads_support(method: Method) -> bool:
    """Whether `method`'s fit reads the task's support set (its `reads_support`, True when undeclared)."""
    return bool(getattr(method, "reads_support", True))


def methods_needing(input_name: str) -> list[str]:
    """The registered methods whose `needs` include the optional input `input_name`, sorted."""
    import clipbridge.bridge.methods  # noqa: F401  (registers every method)

    return sorted(name for name, method in REGISTRY.items() if input_name in getattr(method, "needs", ()))


def require_inputs(method: Method, task) -> None:
    """Refuse, in one line, a task that lacks an optional input `method` needs, or the support set (a task
    built without one, bridge.task.FewShotTask.has_support) for a method that reads it."""
    if reads_support(method) and not task.has_support:
        raise BridgeInputError(f"{method.name} fits on the few-shot support set, but this task holds none (it was "
                               "built for a method that reads no support images, such as zeroshot)")
    missing = unmet_needs(method, task.inputs)
    if missing:
        what = "; ".join(OPTIONAL_INPUTS[name] for name in missing)
        raise BridgeInputError(f"{method.name} needs {what}, which this task does not hold (its cache has "
                               f"no {', '.join(missing)}: see `clipbridge info CACHE`); every method without "
                               "that need still runs on it")


def check_hparams(method: Method, hparams: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by `hparams`, every value checked for type and range (bridge.hparams); an unknown
    name or a bad value is a one-line BridgeInputError."""
    from clipbridge.bridge.hparams import check_values

    unknown = set(hparams) - set(method.defaults)
    if unknown:
        raise BridgeInputError(f"{method.name}: unknown hyper-parameter(s) {sorted(unknown)}; "
                               f"known: {sorted(method.defaults)}")
    return {**method.defaults, **check_values(method, hparams)}
