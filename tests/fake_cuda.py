"""A CUDA device imitated on the CPU, so that machines without a GPU (CI) catch the device bugs a GPU would raise.

Inside `fake_cuda()`, a tensor "on the GPU" is a CPU tensor of the marker subclass `OnDevice`: it reports
`device` cuda:0 and `is_cuda` True, every result computed from it is on the device too, and what a real GPU
refuses is refused the same way:
  - an operation mixing device tensors with CPU tensors of one or more dimensions (CPU scalars, 0-dim, are
    allowed, as CUDA allows them; a device tensor may be indexed with CPU indices, a CPU tensor not with device
    ones; copy_ may cross devices);
  - a CPU random generator drawing for the device;
  - numpy() of a device tensor.
Moves behave as on a GPU: `.to("cuda")`, `.cuda()`, `.to(device_tensor)` and factories given `device=` a cuda
device return device tensors, `.cpu()` and `.to("cpu")` plain ones. Code that asks torch.cuda itself (streams,
kernels, devices' properties) is not imitated beyond what fake_cuda() answers: the fake covers what tensors do.

Worker threads see the fake only where the code under test carries the caller's torch function modes into them
(bridge.threads.map_single_threaded does).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

DEVICE = torch.device("cuda", 0)


class OnDevice(Tensor):
    """Marker: this CPU tensor stands for one on DEVICE."""


def on_device(x: Any) -> Any:
    """x (a tensor, or tensors in tuples and lists) as device tensors."""
    if isinstance(x, Tensor):
        return x if isinstance(x, OnDevice) else x.as_subclass(OnDevice)
    if isinstance(x, (tuple, list)):
        return type(x)(on_device(v) for v in x)
    return x


def on_host(x: Any) -> Any:
    """x (a tensor, or tensors in tuples and lists) as plain CPU tensors."""
    if isinstance(x, OnDevice):
        return x.as_subclass(Tensor)
    if isinstance(x, (tuple, list)):
        return type(x)(on_host(v) for v in x)
    return x


def _cross(x: Tensor, to_device: bool) -> Tensor:
    """x on the device (to_device) or the host: itself when it is there already, else a copy (as a real move)."""
    if isinstance(x, OnDevice) == to_device:
        return x
    return on_device(x.clone()) if to_device else on_host(x.clone())


def _leaves(x: Any) -> Iterator[Tensor]:
    if isinstance(x, Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)


def _target(device: Any) -> bool | None:
    """True for a cuda device (or a device tensor), False for the CPU, None when `device` names none."""
    if isinstance(device, Tensor):
        return isinstance(device, OnDevice)
    if isinstance(device, (str, torch.device)):
        return torch.device(device).type == "cuda"
    return None


def _refuse_mixing(name: str, tensors: list[Tensor]) -> None:
    if any(isinstance(t, OnDevice) for t in tensors) and any(not isinstance(t, OnDevice) and t.dim() > 0
                                                             for t in tensors):
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"cuda:0 and cpu! (fake_cuda: {name})")


class FakeCuda(TorchFunctionMode):
    """The torch function mode of fake_cuda() (module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        owner = getattr(func, "__self__", None)
        if owner is Tensor.device:
            return DEVICE if isinstance(args[0], OnDevice) else func(*args, **kwargs)
        if owner is Tensor.is_cuda:
            return isinstance(args[0], OnDevice)
        if owner is Tensor.grad and isinstance(args[0], OnDevice):    # autograd makes plain tensors
            return on_device(func(*args, **kwargs))
        if func is Tensor.cpu:
            return _cross(args[0], False)
        if func is Tensor.cuda:
            return _cross(args[0], True)
        if func is Tensor.numpy and isinstance(args[0], OnDevice):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first. (fake_cuda)")
        if func is Tensor.to:
            return self._move(func, args, kwargs)
        if func is torch._C._nn._parse_to:                   # Module.to reads its device here: keep it
            return func(*args, **kwargs)
        target = _target(kwargs.get("device"))
        if target is not None:
            kwargs["device"] = "cpu"
        name = getattr(func, "__name__", str(func))
        generator = kwargs.get("generator")
        device_work = target or any(isinstance(t, OnDevice) for t in _leaves(args))
        if generator is not None and device_work and generator.device.type == "cpu":
            raise RuntimeError(f"Expected a 'cuda' device type for generator but found 'cpu' (fake_cuda: {name})")
        self._check(func, name, args, kwargs)
        out = func(*args, **kwargs)
        if func is torch.autograd.grad and any(isinstance(t, OnDevice) for t in _leaves(kwargs.get("inputs", args[1:2]))):
            return on_device(out)
        if target is True:
            return on_device(out)
        if target is False and not device_work:
            return on_host(out)
        return out

    @staticmethod
    def _check(func, name: str, args: tuple, kwargs: dict) -> None:
        if func is Tensor.copy_ or func is torch._has_compatible_shallow_copy_type:     # a copy; a type query
            return
        if func in (Tensor.__getitem__, Tensor.__setitem__):
            self_, index = args[0], list(_leaves(args[1]))
            if not isinstance(self_, OnDevice) and any(isinstance(t, OnDevice) for t in index):
                raise RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor "
                                   f"(cpu) (fake_cuda: {name})")
            _refuse_mixing(name, [self_] + list(_leaves(args[2:])))
            return
        _refuse_mixing(name, list(_leaves(args)) + list(_leaves(kwargs)))

    @staticmethod
    def _move(func, args: tuple, kwargs: dict):
        x, rest = args[0], list(args[1:])
        target = _target(kwargs.get("device"))
        if target is not None:
            kwargs["device"] = "cpu"
        for i, value in enumerate(rest):
            moved = _target(value)
            if moved is not None:
                target = moved
                rest[i] = value.dtype if isinstance(value, Tensor) else "cpu"
        out = func(x, *rest, **kwargs)
        if target is None:
            return on_device(out) if isinstance(x, OnDevice) else out
        return _cross(out, target) if out is x else (on_device(out) if target else on_host(out))


def _load(load):
    """torch.load that maps what it loads to the imitated device when asked (map_location cuda)."""
    def loaded(*args, map_location=None, **kwargs):
        if _target(map_location) is not True:
            return load(*args, map_location=map_location, **kwargs)
        out = load(*args, map_location="cpu", **kwargs)
        return {k: on_device(v) for k, v in out.items()} if isinstance(out, dict) else on_device(out)
    return loaded


@contextlib.contextmanager
def fake_cuda() -> Iterator[None]:
    """Imitate a CUDA device for the block (module docstring): torch reports one CUDA device (so device "auto"
    picks it), torch.cuda's timing and memory calls answer as on an idle GPU, torch.load maps to it, and
    nn.Module.to("cuda") gives the module device parameters."""
    answers = {"is_available": lambda: True, "device_count": lambda: 1, "synchronize": lambda *a, **k: None,
               "reset_peak_memory_stats": lambda *a, **k: None, "max_memory_allocated": lambda *a, **k: 0,
               "empty_cache": lambda: None, "get_device_name": lambda *a, **k: "fake CUDA device (CPU)",
               "manual_seed_all": lambda *a, **k: None}
    saved = {name: getattr(torch.cuda, name) for name in answers}
    saved_load, saved_accelerator = torch.load, torch.accelerator.current_accelerator
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    try:
        for name, answer in answers.items():
            setattr(torch.cuda, name, answer)
        torch.load = _load(saved_load)
        # torch's optimisers ask the accelerator for graph capture: no real one is there to ask
        torch.accelerator.current_accelerator = lambda *args, **kwargs: None
        # Module.to replaces parameters instead of assigning .data, so that they become device tensors too
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        with FakeCuda():
            yield
    finally:
        for name, original in saved.items():
            setattr(torch.cuda, name, original)
        torch.load, torch.accelerator.current_accelerator = saved_load, saved_accelerator
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
