"""Reduced-precision matrix products for fitting: `--precision auto|fp32|bf16|tf32`.

Only the matrix products change (matmul, mm, bmm, addmm, baddbmm, einsum, linear and their in-place and
`out=` forms): their float32 operands are taken in bf16 (8-bit mantissa) or TF32 (10-bit) and the products
are accumulated and returned in float32. Everything else — parameters and optimiser state, losses,
softmax, norms, exponentials and every comparison a search makes — stays float32, because only the products
are touched.

    fp32   nothing changes: no mode is installed, results are bit for bit those without this module.
    bf16   products with bf16 operands, float32 accumulation and output. Kernel ("bf16_kernel" in records):
             native    the CPU's oneDNN bf16 GEMM (AVX512-BF16 / AMX) through torch's fp32 matmul precision
                       setting "bf16": float32 tensors in and out, bf16 arithmetic inside;
             emulated  (CUDA, where `auto` uses tf32 instead, and CPUs without bf16 arithmetic, such as
                       AVX2-only ones, where a bfloat16 GEMM is ~100x slower than float32, and CPUs with
                       bf16 arithmetic whose torch build does not route float32 GEMMs through oneDNN, so
                       the setting above changes nothing: `native_bf16` probes it once) operands rounded to bf16 (round to nearest even) and multiplied by
                       the float32 GEMM: bf16×bf16 products are exact in float32, so this is the same
                       arithmetic as a bf16 GEMM with float32 accumulation up to summation order. It has the
                       accuracy of bf16 and none of its speed (accuracy measurements; `auto` never picks it).
                       Only products called from Python are rounded: autograd's backward products (the
                       methods trained with autograd) stay float32, their forward products are rounded.
    tf32   CUDA only: torch's TF32 tensor-core products for float32 (cuBLAS and cuDNN).
    auto   per method and device from AUTO_SAFE below (fp32 where nothing is listed or no fast kernel exists).

`AUTO_SAFE` is data: the methods whose mean test-accuracy change under the reduced precision was at most
AUTO_MAX_MEAN_DIFF points over 10 seeds in the measured table (`python -m clipbridge.bridge.precision_bench`,
figures in FIGURES.md, "Precision and SeMoBridge-T step (issue 21)").
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, NamedTuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from clipbridge.bridge.errors import BridgeInputError

PRECISIONS = ("auto", "fp32", "bf16", "tf32")
AUTO_MAX_MEAN_DIFF = 0.1      # points of test accuracy, mean over 10 seeds (the rule)

# Methods whose mean |Δ test accuracy| under each reduced precision was <= AUTO_MAX_MEAN_DIFF points on EVERY
# cache of the measured table (source: `python -m clipbridge.evaluate.bench.precision --cache demo-shapes.h5
# --cache synth100.h5 --seeds 1-10 --hparam semobridge-t.steps=200`, 16 shots, uniform recipe, emulated
# kernels; the table is in FIGURES.md, "Precision and SeMoBridge-T step (issue 21)"). zeroshot does no product
# while fitting. bf16 is chosen on CPUs with native bf16 arithmetic, tf32 on CUDA; everything else runs fp32.
AUTO_SAFE: dict[str, frozenset[str]] = {
    "bf16": frozenset({"zeroshot", "clip-adapter", "ape-t", "semobridge-t"}),
    "tf32": frozenset({"zeroshot", "clip-adapter", "tip-adapter", "ape", "ape-t", "gda", "semobridge"}),
}


class Precision(NamedTuple):
    """A resolved precision: name ("fp32", "fp64", "bf16" or "tf32") and, for bf16, the kernel
    ("native" or "emulated"; "" otherwise)."""

    name: str
    kernel: str = ""

    def record(self) -> dict[str, str]:
        """The fields a result record and run.json carry."""
        return {"precision": self.name, **({"bf16_kernel": self.kernel} if self.kernel else {})}


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` is a CPU whose oneDNN has bf16 arithmetic (AVX512-BF16 or AMX) AND takes torch's float32
    matrix products under `torch.backends.mkldnn.matmul.fp32_precision = "bf16"` (some builds send CPU float32
    GEMMs to another BLAS, where the setting changes nothing: then bf16 runs emulated, never silently fp32)."""
    if torch.device(device).type != "cpu":
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available() or not check():
        return False
    return _bf16_setting_engages()


@functools.lru_cache(maxsize=1)
def _bf16_setting_engages() -> bool:
    """One small product under the bf16 setting: its error against float64 is bf16's (~1e-2 here), not
    float32's (~1e-5), when oneDNN's bf16 GEMM really runs."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 256, generator=generator), torch.randn(256, 64, generator=generator)
    exact = a.double() @ b.double()
    setting = torch.backends.mkldnn.matmul
    saved = setting.fp32_precision
    try:
        setting.fp32_precision = "bf16"
        reduced = (a @ b).double()
    finally:
        setting.fp32_precision = saved
    return bool((reduced - exact).abs().max() > 100 * ((a @ b).double() - exact).abs().max())


def resolve_precision(requested: str, method: str, device: torch.device | str,
                      dtype: torch.dtype = torch.float32) -> Precision:
    """The precision a fit of `method` on `device` at `dtype` runs with; BridgeInputError (one line) for a
    name not in PRECISIONS or one the device or dtype cannot do."""
    if requested not in PRECISIONS:
        raise BridgeInputError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if dtype == torch.float64:
        if requested in ("bf16", "tf32"):
            raise BridgeInputError(f"precision {requested} needs dtype float32 (this fit is float64)")
        return Precision("fp64")
    if dtype != torch.float32:
        raise BridgeInputError(f"precision needs a float32 or float64 fit, got {dtype}")
    if requested == "tf32" and device.type != "cuda":
        raise BridgeInputError(f"precision tf32 needs a CUDA device (this fit runs on {device.type}); use bf16 or fp32")
    if requested == "auto":
        if device.type == "cuda":
            requested = "tf32" if method in AUTO_SAFE["tf32"] else "fp32"
        else:
            requested = "bf16" if method in AUTO_SAFE["bf16"] and native_bf16(device) else "fp32"
    if requested == "bf16":
        kernel = "native" if device.type == "cpu" and native_bf16(device) else "emulated"
        return Precision("bf16", kernel)
    return Precision(requested)


# ------------------------------------------------------------------------------------------ rounding
def round_bf16(x: Tensor) -> Tensor:
    """x (float32) rounded to the nearest bf16 value (ties to even), kept as float32; under autograd the
    gradient passes through unchanged (straight through)."""
    return _straight_through(x, x.detach().to(torch.bfloat16).to(x.dtype))


def round_tf32(x: Tensor) -> Tensor:
    """x (float32) rounded to TF32's 10-bit mantissa (ties to even), kept as float32; inf/NaN pass through;
    under autograd the gradient passes through unchanged (straight through)."""
    bits = x.detach().contiguous().view(torch.int32)
    rounded = (bits + (0x0FFF + ((bits >> 13) & 1))) & ~0x1FFF
    return _straight_through(x, torch.where(torch.isfinite(x.detach()), rounded.view(torch.float32), x.detach()))


def _straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    """`rounded` in the forward pass, x's gradient in the backward one (x + (rounded − x), both exact)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return rounded
    return x + (rounded - x).detach()


# Products intercepted, with the positions of their matrix operands (after `self` for tensor methods).
_OPERANDS: dict = {}
for _f, _pos in ((torch.matmul, (0, 1)), (torch.mm, (0, 1)), (torch.bmm, (0, 1)), (torch.addmm, (1, 2)),
                 (torch.baddbmm, (1, 2)), (torch.addbmm, (1, 2)), (torch.nn.functional.linear, (0, 1)),
                 (Tensor.matmul, (0, 1)), (Tensor.__matmul__, (0, 1)), (Tensor.__rmatmul__, (0, 1)),
                 (Tensor.mm, (0, 1)), (Tensor.bmm, (0, 1)), (Tensor.addmm, (1, 2)), (Tensor.addmm_, (1, 2)),
                 (Tensor.baddbmm, (1, 2)), (Tensor.baddbmm_, (1, 2))):
    _OPERANDS[_f] = _pos


class _ProductMode(TorchFunctionMode):
    """Every float32 matrix product's operands through `convert` (rounding to a shorter mantissa, kept
    float32), then the float32 product itself: the emulation of the module docstring."""

    def __init__(self, convert):
        super().__init__()
        self.convert = convert

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.einsum:
            equation, *operands = args
            nested = len(operands) == 1 and isinstance(operands[0], (list, tuple))
            operands = list(operands[0]) if nested else operands
            if all(isinstance(t, Tensor) and t.dtype == torch.float32 for t in operands):
                operands = [self.convert(t) for t in operands]
            return func(equation, *operands, **kwargs)
        positions = _OPERANDS.get(func)
        if positions is None or not all(i < len(args) and isinstance(args[i], Tensor)
                                        and args[i].dtype == torch.float32 for i in positions):
            return func(*args, **kwargs)
        return func(*(self.convert(a) if i in positions else a for i, a in enumerate(args)), **kwargs)


@contextlib.contextmanager
def products_in(precision: Precision) -> Iterator[None]:
    """Run the block's matrix products at `precision` (module docstring); fp32 / fp64: nothing installed."""
    if precision.name == "tf32":
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    elif precision.name == "bf16" and precision.kernel == "native":
        setting = torch.backends.mkldnn.matmul
        saved = setting.fp32_precision
        setting.fp32_precision = "bf16"
        try:
            yield
        finally:
            setting.fp32_precision = saved
    elif precision.name == "bf16":
        with _ProductMode(round_bf16):
            yield
    else:
        yield


@contextlib.contextmanager
def emulated(name: str) -> Iterator[None]:
    """Products with operands rounded to `name` ("bf16" or "tf32") and float32 GEMMs, on any device: the
    accuracy of that precision without its kernels (precision_bench measures with it on CPUs)."""
    if name not in ("bf16", "tf32"):
        raise BridgeInputError(f"only bf16 and tf32 can be emulated, not {name!r}")
    with _ProductMode(round_bf16 if name == "bf16" else round_tf32):
        yield
