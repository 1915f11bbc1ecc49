"""bridge.precision (`--precision auto|fp32|bf16|tf32`): refusals, records, bf16 products really taken in
bf16, fp32 unchanged, and `auto` following its measured table."""
from __future__ import annotations

import contextlib
import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch.overrides import TorchFunctionMode

from clipbridge.bridge import precision as bp
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.registry import get_method
from clipbridge.errors import ClipBridgeError
from clipbridge.cache.synthetic import write_synthetic_cache
from clipbridge.evaluate.commands.main import fit
from clipbridge.evaluate.reporting.records import read_records
from clipbridge.evaluate.fitting.scoring import fit_method
from synthetic_tasks import make_task


def _bf16_exact(x: torch.Tensor) -> bool:
    return bool(torch.equal(x, x.to(torch.bfloat16).float()))


class _Spy(TorchFunctionMode):
    """Records the float operands of every mm / bmm / matmul it sees."""

    def __init__(self):
        super().__init__()
        self.operands: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.mm, torch.bmm, torch.matmul, torch.Tensor.__matmul__, torch.Tensor.matmul):
            self.operands += [a for a in args[:2] if isinstance(a, torch.Tensor) and a.is_floating_point()]
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------------------- resolution
@pytest.mark.parametrize("requested, device, dtype, message", [
    ("fp16", "cpu", torch.float32, "unknown precision 'fp16'"),
    ("tf32", "cpu", torch.float32, "precision tf32 needs a CUDA device"),
    ("bf16", "cpu", torch.float64, "precision bf16 needs dtype float32"),
])
def test_precisions_a_fit_cannot_use_are_refused_in_one_line(requested, device, dtype, message):
    with pytest.raises(BridgeInputError, match=message) as caught:
        bp.resolve_precision(requested, "semobridge", device, dtype)
    assert "\n" not in str(caught.value)


def test_bf16_is_accepted_on_cpu_with_the_kernel_this_cpu_has():
    chosen = bp.resolve_precision("bf16", "semobridge", "cpu")
    assert chosen.name == "bf16" and chosen.kernel == bp.bf16_kernel("cpu")
    assert chosen.kernel in ("native", "cast", "emulated")
    assert chosen.record() == {"precision": "bf16", "bf16_kernel": chosen.kernel}
    assert bp.resolve_precision("fp32", "semobridge", "cpu").record() == {"precision": "fp32"}
    assert bp.resolve_precision("auto", "semobridge", "cpu", torch.float64).name == "fp64"


def test_auto_picks_a_reduced_precision_only_for_methods_and_devices_its_table_lists(monkeypatch):
    monkeypatch.setitem(bp.AUTO_SAFE, "bf16", frozenset({"gda"}))
    monkeypatch.setitem(bp.AUTO_SAFE, "bf16-cast", frozenset({"cmm"}))
    monkeypatch.setitem(bp.AUTO_SAFE, "tf32", frozenset({"gda"}))
    monkeypatch.setattr(bp, "bf16_kernel", lambda device: "native")
    assert bp.resolve_precision("auto", "gda", "cpu") == bp.Precision("bf16", "native")
    assert bp.resolve_precision("auto", "cmm", "cpu") == bp.Precision("fp32")
    monkeypatch.setattr(bp, "bf16_kernel", lambda device: "cast")            # its own table: other numerics
    assert bp.resolve_precision("auto", "cmm", "cpu") == bp.Precision("bf16", "cast")
    assert bp.resolve_precision("auto", "gda", "cpu") == bp.Precision("fp32")
    monkeypatch.setattr(bp, "bf16_kernel", lambda device: "native")
    assert bp.resolve_precision("auto", "semobridge", "cpu") == bp.Precision("fp32")
    assert bp.resolve_precision("auto", "gda", "cuda").name == "tf32"
    assert bp.resolve_precision("auto", "semobridge", "cuda").name == "fp32"
    monkeypatch.setattr(bp, "bf16_kernel", lambda device: "emulated")     # no fast kernel: never emulated
    assert bp.resolve_precision("auto", "gda", "cpu") == bp.Precision("fp32")


def test_the_auto_table_names_registered_methods_only():
    import clipbridge.bridge.methods  # noqa: F401
    from clipbridge.bridge.registry import REGISTRY

    assert set(bp.AUTO_SAFE) == {"bf16", "bf16-cast", "tf32"}
    assert all(name in REGISTRY for names in bp.AUTO_SAFE.values() for name in names)


# ------------------------------------------------------------------------------------------ rounding
def test_bf16_products_take_bf16_operands_and_accumulate_in_fp32():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 300, generator=g), torch.randn(300, 40, generator=g)
    chosen = bp.resolve_precision("bf16", "semobridge", "cpu")
    with bp.products_in(chosen):
        product = a @ b
    assert product.dtype == torch.float32
    exact = a.double() @ b.double()
    rounded = (bp.round_bf16(a).double() @ bp.round_bf16(b).double())
    # the error is that of bf16 operands (relative ~2^-9 per operand), far above fp32's, and the product
    # is the fp32-accumulated product of the rounded operands
    assert (product.double() - exact).abs().max() > 100 * ((a @ b).double() - exact).abs().max()
    # kernel "cast" rounds the float32-accumulated product to bf16 on the way out (2^-9 relative, 2^-8 with the
    # accumulation order's last bit); the others return it in float32
    tolerance = dict(rtol=2.0 ** -8, atol=1e-4) if chosen.kernel == "cast" else dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(product.double(), rounded, **tolerance)


def _bf16(x):
    return bp.round_bf16(x).double()


@pytest.mark.parametrize("form", ["matmul", "method matmul", "rmatmul", "mm", "bmm", "linear", "addmm", "addmm_",
                                  "baddbmm", "baddbmm_", "addbmm", "einsum", "out"])
def test_cast_kernel_multiplies_bf16_operands_and_returns_float32_in_every_product_form(form):
    g = torch.Generator().manual_seed(3)
    a, b, c = torch.randn(12, 40, generator=g), torch.randn(40, 9, generator=g), torch.randn(12, 9, generator=g)
    a3, b3, c3 = torch.randn(3, 12, 40, generator=g), torch.randn(3, 40, 9, generator=g), torch.randn(3, 12, 9, generator=g)
    bias = torch.randn(9, generator=g)
    mm, bmm = _bf16(a) @ _bf16(b), _bf16(a3) @ _bf16(b3)
    cases = {
        "matmul": (lambda: torch.matmul(a, b), mm),
        "method matmul": (lambda: a.matmul(b), mm),
        "rmatmul": (lambda: b.__rmatmul__(a), mm),
        "mm": (lambda: torch.mm(a, b), mm),
        "bmm": (lambda: torch.bmm(a3, b3), bmm),
        "linear": (lambda: torch.nn.functional.linear(a, b.T, bias), mm + bias.double()),
        "addmm": (lambda: torch.addmm(c, a, b, beta=0.5, alpha=2.0), 0.5 * c.double() + 2 * mm),
        "addmm_": (lambda: c.clone().addmm_(a, b, beta=0.0), mm),
        "baddbmm": (lambda: torch.baddbmm(c3, a3, b3), c3.double() + bmm),
        "baddbmm_": (lambda: c3.clone().baddbmm_(a3, b3, alpha=-1.0), c3.double() - bmm),
        "addbmm": (lambda: torch.addbmm(c, a3, b3), c.double() + bmm.sum(0)),
        "einsum": (lambda: torch.einsum("snd,sdc->snc", a3, b3), bmm),
        "out": (lambda: torch.bmm(a3, b3, out=torch.empty(3, 12, 9)), bmm),
    }
    run, expected = cases[form]
    with bp.products_in(bp.Precision("bf16", "cast")):
        got = run()
    assert got.dtype == torch.float32
    # bf16 operands, float32 accumulation, one bf16 rounding per product (the add forms add in float32)
    scale = (expected.abs() + 3 * mm.abs().amax()).amax().item()
    assert (got.double() - expected).abs().max().item() <= 2.0 ** -8 * scale
    # and not float32's product of the unrounded operands: the operands really were bf16
    assert not torch.equal(got, run())


def test_cast_kernel_gradients_flow_to_float32_parameters():
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(5, 30, generator=g, requires_grad=True), torch.randn(30, 4, generator=g)
    with bp.products_in(bp.Precision("bf16", "cast")):
        (x @ w).sum().backward()
    assert x.grad.dtype == torch.float32
    # the backward product runs in bf16 as well: the rounded w's row sums, rounded once more on the way out
    expected = _bf16(w).sum(1).expand(5, -1)
    assert (x.grad.double() - expected).abs().max().item() <= 2.0 ** -8 * w.abs().sum(1).max().item()


def test_emulated_bf16_hands_the_gemm_operands_rounded_to_bf16_and_leaves_other_ops_alone():
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randn(3, 8, 16, generator=g), torch.randn(3, 16, 4, generator=g), torch.randn(8, 16, generator=g)
    spy = _Spy()
    with spy, bp.emulated("bf16"):
        out = torch.empty(3, 8, 4)
        torch.bmm(a, b, out=out)
        c @ b[0]
        total = (a * 1.1).sum()                     # not a product: untouched
    assert len(spy.operands) == 4 and all(_bf16_exact(t) for t in spy.operands)
    torch.testing.assert_close(out, bp.round_bf16(a) @ bp.round_bf16(b), rtol=0, atol=0)
    assert total == (a * 1.1).sum()


def test_round_tf32_keeps_ten_mantissa_bits_to_nearest():
    x = torch.tensor([1.0 + 2 ** -10, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, -3.0e-3, float("inf")])
    y = bp.round_tf32(x)
    assert y.tolist()[:3] == [1.0 + 2 ** -10, 1.0, 1.0 + 2 ** -9]        # exact, tie to even, tie up to even
    assert (y.view(torch.int32)[:4] & 0x1FFF).eq(0).all() and y[4] == float("inf")
    assert abs(float(y[3]) / -3.0e-3 - 1) <= 2 ** -11


def test_only_bf16_and_tf32_can_be_emulated():
    with pytest.raises(BridgeInputError, match="only bf16 and tf32"):
        with bp.emulated("fp8"):
            pass


# --------------------------------------------------------------------------------------------- fits
@pytest.mark.parametrize("method", ["semobridge", "gda"])
def test_fp32_fits_are_bit_identical_to_a_fit_without_the_option(method):
    task, _, _ = make_task(seeds=(1, 2), classes=5, shots=4)
    plain = get_method(method).fit(task)
    state = fit_method(method, task, precision="fp32")
    assert state.info["precision"] == "fp32" and "bf16_kernel" not in state.info
    assert plain.tensors.keys() == state.tensors.keys()
    assert all(torch.equal(plain.tensors[k], state.tensors[k]) for k in plain.tensors)


def test_a_bf16_fit_differs_from_fp32_by_bf16_rounding_only():
    task, queries, labels = make_task(seeds=(1,), classes=5, shots=4)
    fp32 = fit_method("gda", task, precision="fp32")
    bf16 = fit_method("gda", task, precision="bf16")
    assert bf16.info["precision"] == "bf16"
    method = get_method("gda")
    a, b = method.logits(fp32, queries), method.logits(bf16, queries)
    assert not torch.equal(a, b)
    assert float((a - b).abs().max() / a.abs().max()) < 0.05


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_synthetic_cache(tmp_path_factory.mktemp("precision") / "syn.h5", classes=5, train_per_class=6,
                                 dim=16, width=12, val=20, test=30, seed=3)


def _fit(tmp_path, cache, *extra):
    result = CliRunner().invoke(fit, [str(a) for a in ["--cache", cache, "--runs", tmp_path / "runs", "--results",
                                                        tmp_path / "results", "--device", "cpu", "--method", "gda",
                                                        "--shots", "2", "--recipe", "uniform", *extra]])
    if result.exception and not isinstance(result.exception, (SystemExit, ClipBridgeError, BridgeInputError)):
        raise result.exception
    return result


@pytest.mark.parametrize("option, recorded", [("bf16", "bf16"), ("auto", None), ("fp32", "fp32")])
def test_fit_records_the_precision_used_in_results_and_run_json(tmp_path, cache, option, recorded):
    result = _fit(tmp_path, cache, "--precision", option)
    assert result.exit_code == 0, result.output
    expected = recorded or bp.resolve_precision("auto", "gda", "cpu").name
    records = read_records(tmp_path / "results" / "results.jsonl")
    assert records and all(r["precision"] == expected for r in records)
    assert f"products {expected}" in result.output
    run_json = json.loads(next((tmp_path / "runs").rglob("run.json")).read_text())
    assert run_json["meta"]["precision"] == expected and run_json["info"]["precision"] == expected
    if expected == "bf16":
        assert all(r["bf16_kernel"] == bp.bf16_kernel("cpu") for r in records)


def test_fit_refuses_tf32_on_cpu_before_any_work(tmp_path, cache):
    result = _fit(tmp_path, cache, "--precision", "tf32")
    assert result.exit_code != 0 and isinstance(result.exception, BridgeInputError)
    assert "tf32 needs a CUDA device" in str(result.exception)
    assert not (tmp_path / "results" / "results.jsonl").exists() and not (tmp_path / "runs").exists()


def test_fit_refuses_an_unknown_precision(tmp_path, cache):
    result = _fit(tmp_path, cache, "--precision", "fp8")
    assert result.exit_code == 2 and "fp8" in result.output


def test_rounded_operands_pass_gradients_straight_through():
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(6, 3)
    for name, rounding in (("bf16", bp.round_bf16), ("tf32", bp.round_tf32)):
        with bp.emulated(name):
            (x @ w).sum().backward()
        torch.testing.assert_close(x.grad, rounding(w).sum(1).expand(4, -1), rtol=0, atol=0)
        x.grad = None


def test_cast_kernel_keeps_torchs_conventions_at_the_edges():
    """The deprecated addmm(beta, input, m1, m2) runs untouched (its operands stand elsewhere), an empty out= is
    resized as torch resizes it, alpha = 0 ignores inf and NaN in the matrices, and a float64 input or bias is
    left to torch (which refuses it)."""
    g = torch.Generator().manual_seed(6)
    base, m1, m2 = torch.randn(3, 4, generator=g), torch.randn(3, 5, generator=g), torch.randn(5, 4, generator=g)
    def cast():
        return bp.products_in(bp.Precision("bf16", "cast"))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                        # the deprecated signature
        expected = torch.addmm(0.5, base, m1, m2)
        with cast():
            assert torch.equal(torch.addmm(0.5, base, m1, m2), expected)
    with cast():
        out = torch.mm(m1, m2, out=torch.empty(0))
    assert out.shape == (3, 4) and (out.double() - _bf16(m1) @ _bf16(m2)).abs().max() < 2.0 ** -8 * 20
    poisoned = m1.clone()
    poisoned[0, 0] = float("inf")
    with cast():
        ignored = torch.addmm(base, poisoned, m2, alpha=0)
    assert torch.equal(ignored, base)
    with cast(), pytest.raises(RuntimeError):
        torch.addmm(base.double(), m1, m2)


@contextlib.contextmanager
def reduced_products(kernel: str):
    """The block's float32 products in bf16: products_in's mode of `kernel` ("emulated", "cast", "native"), or for
    "medium" torch.set_float32_matmul_precision("medium") (oneDNN's bf16 GEMM on CPUs that have one); the global
    setting is restored after either way."""
    saved = torch.get_float32_matmul_precision()
    try:
        if kernel == "medium":
            torch.set_float32_matmul_precision("medium")
            yield
        else:
            with bp.products_in(bp.Precision("bf16", kernel)):
                yield
    finally:
        torch.set_float32_matmul_precision(saved)


@pytest.mark.parametrize("kernel", ["emulated", "cast", "native", "medium"])
def test_full_products_run_float32_products_inside_any_reduced_mode_and_restore_it(kernel):
    """full_products (the searches' bounds) gives the plain float32 product inside every bf16 mode and under
    torch.set_float32_matmul_precision("medium"); after the block the mode is back (same reduced product)."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(64, 300, generator=g), torch.randn(300, 48, generator=g)
    plain = torch.mm(a, b)
    with reduced_products(kernel):
        before = torch.mm(a, b)
        with bp.full_products():
            inside = (torch.mm(a, b), a @ b, torch.einsum("ij,jk->ik", a, b))
        after = torch.mm(a, b)
    assert all(torch.equal(x, plain) for x in inside[:2])
    assert torch.allclose(inside[2], plain, rtol=1e-5, atol=1e-4)
    assert torch.equal(after, before)
    if kernel in ("emulated", "cast"):                                       # modes of ours: reduced on any CPU
        assert not torch.equal(before, plain)
