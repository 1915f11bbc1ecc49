"""Reduced-precision matrix products for fitting: `--precision auto|fp32|bf16|tf32`.

Only the matrix products change (matmul, mm, bmm, addmm, baddbmm, einsum, linear and their in-place and
`out=` forms): their float32 operands are taken in bf16 (8-bit mantissa) or TF32 (10-bit) and the products
are accumulated and returned in float32. Everything else — parameters and optimiser state, losses,
softmax, norms, exponentials and every comparison a search makes — stays float32, because only the products
are touched.

    fp32   nothing changes: no mode is installed, results are bit for bit those without this module.
    bf16   products with bf16 operands and float32 accumulation. Kernel ("bf16_kernel" in records), the first
           of these the device has (`bf16_kernel`):
             native    the CPU's oneDNN bf16 GEMM (AVX512-BF16 / AMX) through torch's fp32 matmul precision
                       setting "bf16": float32 tensors in and out, bf16 arithmetic inside, float32 output
                       (builds that route CPU float32 GEMMs through oneDNN; `_bf16_setting_engages` probes
                       whether the setting really changes the arithmetic);
             cast      CPUs with bf16 arithmetic whose torch build does not route float32 GEMMs through oneDNN
                       (the setting above changes nothing there; torch 2.14's CPU wheels): the float32
                       operands are cast to bfloat16 and multiplied by the bfloat16 GEMM (oneDNN, float32
                       accumulation inside), and the product comes back as float32 after a rounding to bf16
                       on the way out (no CPU kernel returns float32 from bfloat16 operands): one rounding
                       of 2^-9 relative per output element more than `native`; 2.5x the float32 GEMM's rate
                       on an AVX512-BF16 EPYC. Autograd's backward products of these run in bf16 too;
             emulated  (CUDA, where `auto` uses tf32 instead, and CPUs without bf16 arithmetic, such as
                       AVX2-only ones, where a bfloat16 GEMM is ~100x slower than float32) operands rounded
                       to bf16 (round to nearest even) and multiplied by
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
# cache of the measured table (`python -m clipbridge.evaluate.bench.precision --cache demo-shapes.h5 --cache
# synth100.h5 --seeds 1-10 --hparam semobridge-t.steps=200 --hparam semobridge-t.warmup=20`, 16 shots, uniform
# recipe; the tables are in FIGURES.md, "Precision and SeMoBridge-T step (issue 21)" and "GPU (issue 21)"):
#   bf16       kernel "native" (no machine of ours has it yet): measured with the emulated kernel, whose arithmetic
#              it shares (bf16 operands, float32 accumulation and output);
#   bf16-cast  kernel "cast", measured with it on an AVX512-BF16 EPYC (its output rounding and bf16 backward
#              products move SeMoBridge-T by +0.60 and APE-T by -0.18 points on synth100: not safe there);
#   tf32       measured on an H200 (TF32 tensor cores), both caches.
# zeroshot does no product while fitting. Emulated kernels are never chosen by `auto`.
AUTO_SAFE: dict[str, frozenset[str]] = {
    "bf16": frozenset({"zeroshot", "clip-adapter", "ape-t", "semobridge-t"}),
    "bf16-cast": frozenset({"zeroshot", "clip-adapter"}),
    "tf32": frozenset({"zeroshot", "clip-adapter", "tip-adapter", "ape", "ape-t", "gda", "semobridge"}),
}


class Precision(NamedTuple):
    """A resolved precision: name ("fp32", "fp64", "bf16" or "tf32") and, for bf16, the kernel
    ("native", "cast" or "emulated"; "" otherwise)."""

    name: str
    kernel: str = ""

    def record(self) -> dict[str, str]:
        """The fields a result record and run.json carry."""
        return {"precision": self.name, **({"bf16_kernel": self.kernel} if self.kernel else {})}


def bf16_kernel(device: torch.device | str) -> str:
    """The bf16 kernel `device` runs (module docstring): "native" on a CPU whose oneDNN has bf16 arithmetic
    (AVX512-BF16 or AMX) AND takes torch's float32 matrix products under `torch.backends.mkldnn.matmul.
    fp32_precision = "bf16"`; "cast" on such a CPU whose build sends float32 GEMMs to another BLAS (the setting
    changes nothing there: never silently fp32); "emulated" elsewhere (no fast bf16 GEMM)."""
    if torch.device(device).type != "cpu":
        return "emulated"
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available() or not check():
        return "emulated"
    return "native" if _bf16_setting_engages() else "cast"


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
            kernel = bf16_kernel(device)
            safe = {"native": AUTO_SAFE["bf16"], "cast": AUTO_SAFE["bf16-cast"]}.get(kernel, frozenset())
            requested = "bf16" if method in safe else "fp32"
    if requested == "bf16":
        return Precision("bf16", bf16_kernel(device))
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


# True inside full_products(): the product modes below pass every call through untouched
_suspended = False


class _ProductMode(TorchFunctionMode):
    """Every float32 matrix product's operands through `convert` (rounding to a shorter mantissa, kept
    float32), then the float32 product itself: the emulation of the module docstring."""

    def __init__(self, convert):
        super().__init__()
        self.convert = convert

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _suspended:
            return func(*args, **kwargs)
        if func is torch.einsum:
            equation, operands = _einsum_operands(args)
            if all(isinstance(t, Tensor) and t.dtype == torch.float32 for t in operands):
                operands = [self.convert(t) for t in operands]
            return func(equation, *operands, **kwargs)
        positions = _matrix_positions(func, args)
        if positions is None:
            return func(*args, **kwargs)
        return func(*(self.convert(a) if i in positions else a for i, a in enumerate(args)), **kwargs)


def _einsum_operands(args: tuple) -> tuple[str, list]:
    """(equation, operands) of torch.einsum's arguments, given either as einsum(eq, a, b) or einsum(eq, [a, b])."""
    equation, *operands = args
    nested = len(operands) == 1 and isinstance(operands[0], (list, tuple))
    return equation, list(operands[0]) if nested else operands


def _matrix_positions(func, args: tuple) -> "tuple[int, int] | None":
    """The positions of func's two float32 matrix operands in args, or None where func is no product of
    _OPERANDS, an operand is not a float32 tensor, or an add form is called the deprecated way (a number first:
    addmm(beta, input, m1, m2), whose operands stand elsewhere; it runs untouched)."""
    positions = _OPERANDS.get(func)
    if positions is None or (func in _ADD_FORMS and not (args and isinstance(args[0], Tensor))):
        return None
    if not all(i < len(args) and isinstance(args[i], Tensor) and args[i].dtype == torch.float32 for i in positions):
        return None
    return positions


_LINEAR = torch.nn.functional.linear
_ADD_FORMS = {torch.addmm: torch.mm, torch.baddbmm: torch.bmm, torch.addbmm: None, Tensor.addmm: torch.mm,
              Tensor.addmm_: torch.mm, Tensor.baddbmm: torch.bmm, Tensor.baddbmm_: torch.bmm}
_IN_PLACE = (Tensor.addmm_, Tensor.baddbmm_)


def _bf16_product(func, a: Tensor, b: Tensor) -> Tensor:
    """The product func stands for, of a and b cast to bfloat16, returned as float32 (kernel "cast")."""
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    if func not in _ADD_FORMS:                                         # matmul, mm, bmm, linear (no bias), @
        return func(a, b).to(torch.float32)
    inner = _ADD_FORMS[func]
    if inner is None:                                                  # addbmm: the batch summed in float32
        return torch.bmm(a, b).to(torch.float32).sum(0)
    return inner(a, b).to(torch.float32)


class _CastMode(TorchFunctionMode):
    """Every float32 matrix product by the bfloat16 GEMM (kernel "cast" of the module docstring): operands cast
    to bfloat16, product back to float32; the add forms (addmm, baddbmm, ...) add it to their float32 input
    in float32, `out=` and in-place forms write float32 as before."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _suspended:
            return func(*args, **kwargs)
        if func is torch.einsum:
            equation, operands = _einsum_operands(args)
            if len(operands) > 1 and all(isinstance(t, Tensor) and t.dtype == torch.float32 for t in operands):
                return func(equation, *[t.to(torch.bfloat16) for t in operands], **kwargs).to(torch.float32)
            return func(*args, **kwargs)
        positions = _matrix_positions(func, args)
        bias = (args[2] if len(args) > 2 else kwargs.get("bias")) if func is _LINEAR else None
        others = (args[0] if func in _ADD_FORMS else None, bias, kwargs.get("out"))
        if positions is None or any(isinstance(t, Tensor) and t.dtype != torch.float32 for t in others):
            return func(*args, **kwargs)                  # torch's own kernel (and its own dtype errors)
        out = kwargs.pop("out", None)
        product = _bf16_product(func, args[positions[0]], args[positions[1]])
        if func is _LINEAR:
            result = product if bias is None else product.add_(bias)
        elif func in _ADD_FORMS:
            base, beta, alpha = args[0], kwargs.get("beta", 1), kwargs.get("alpha", 1)
            if alpha != 1:                                 # alpha 0: the product is ignored (inf, NaN too)
                product = product.mul_(alpha) if alpha != 0 else torch.zeros_like(product)
            if func in _IN_PLACE:
                return base.copy_(product) if beta == 0 else base.mul_(beta).add_(product)
            result = product if beta == 0 else product.add_(base if beta == 1 else base * beta)
        else:
            result = product
        if out is not None:
            if out.shape != result.shape:
                out.resize_(result.shape)                 # as torch's out= does
            return out.copy_(result)
        return result


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
    elif precision.name == "bf16" and precision.kernel == "cast":
        with _CastMode():
            yield
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
def full_products() -> Iterator[None]:
    """Run the block's float32 matrix products at full float32 precision whatever mode or setting is active
    (`products_in`'s bf16 modes, oneDNN's bf16 / TF32 setting, which `torch.set_float32_matmul_precision("medium")`
    also makes, CUDA's TF32): for the searches' bounds (bridge.cache_screen, bridge.cache_suspects), which must
    stay within float32 rounding of the exhaustive scoring they bound, whose elementwise sums no mode touches."""
    global _suspended
    mkldnn, cuda = torch.backends.mkldnn.matmul, torch.backends.cuda.matmul
    saved = (_suspended, mkldnn.fp32_precision, cuda.allow_tf32)
    _suspended, mkldnn.fp32_precision, cuda.allow_tf32 = True, "ieee", False
    try:
        yield
    finally:
        _suspended, mkldnn.fp32_precision, cuda.allow_tf32 = saved


@contextlib.contextmanager
def emulated(name: str) -> Iterator[None]:
    """Products with operands rounded to `name` ("bf16" or "tf32") and float32 GEMMs, on any device: the
    accuracy of that precision without its kernels (precision_bench measures with it on CPUs)."""
    if name not in ("bf16", "tf32"):
        raise BridgeInputError(f"only bf16 and tf32 can be emulated, not {name!r}")
    with _ProductMode(round_bf16 if name == "bf16" else round_tf32):
        yield
