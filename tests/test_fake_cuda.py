"""Every method fits and scores on a CUDA device as on the CPU, checked on machines without a GPU through the
imitated device of tests/fake_cuda.py (a GPU run found Tip-Adapter's, APE's, GDA's and CMM's searches mixing
devices; FIGURES.md, "GPU"). The real-GPU version of the method test is test_methods_contract's
test_cuda_task_gives_cuda_logits_equal_to_cpu_ones, which runs where torch sees a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge import precision as bp
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.threads import map_single_threaded
from fake_cuda import OnDevice, fake_cuda
from synthetic_tasks import make_task

FAST = {"steps": 12, "warmup": 4, "epochs": 3, "search_rounds": 2, "search_per_round": 16}
# the searches each method offers: the batched search (default) and the official grid (the paper recipes)
CASES = [(name, None) for name in sorted(REGISTRY)] + [
    (name, "grid") for name in sorted(REGISTRY) if "search" in REGISTRY[name].defaults]


def test_the_fake_device_refuses_what_a_gpu_refuses_and_allows_what_it_allows():
    with fake_cuda():
        x = torch.arange(4.0).to("cuda")
        assert isinstance(x, OnDevice) and x.device.type == "cuda" and x.is_cuda
        with pytest.raises(RuntimeError, match="same device"):
            torch.zeros(4) + x                                       # a CPU vector beside a device one
        with pytest.raises(RuntimeError, match="same device"):
            torch.stack([x, torch.ones(4)])
        with pytest.raises(RuntimeError, match="indices"):
            torch.ones(4)[torch.tensor([1]).cuda()]                  # device indices into a CPU tensor
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, generator=torch.Generator().manual_seed(0), device=x.device)
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        assert isinstance(x + torch.tensor(2.0), OnDevice)          # a CPU scalar is fine
        assert isinstance(x[torch.tensor([0, 2])], OnDevice)        # CPU indices into a device tensor are fine
        assert isinstance(torch.zeros(2, device=x.device), OnDevice)
        back = x.cpu()
        assert not isinstance(back, OnDevice) and back.device.type == "cpu"
        back[0] = 9.0                                                # a real copy: the device tensor keeps its value
        assert float(x[0]) == 0.0
        assert np.array_equal(back.numpy(), [9.0, 1.0, 2.0, 3.0])


def test_worker_threads_run_under_the_callers_torch_function_modes():
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    with Record():
        map_single_threaded(lambda i: torch.ones(2) * i, [1, 2, 3], workers=2)
    assert seen.count("mul") == 3


def test_emulated_bf16_products_in_worker_threads_are_rounded_as_in_the_caller():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 64, generator=g), torch.randn(64, 16, generator=g)
    rounded = bp.round_bf16(a) @ bp.round_bf16(b)
    assert not torch.equal(rounded, a @ b)
    with bp.products_in(bp.Precision("bf16", "emulated")):
        products = map_single_threaded(lambda _: a @ b, [0, 1], workers=2)
    assert all(torch.equal(p, rounded) for p in products)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cache_search_pieces_run_side_by_side_on_the_cpu_and_one_after_another_on_a_gpu(device, monkeypatch):
    import threading

    from clipbridge.bridge import cache_search as cs

    g = torch.Generator().manual_seed(5)
    s, n, c, k = 3, 40, 6, 4
    keys, queries = torch.randn(s, c * k, 8, generator=g), torch.randn(s, n, 8, generator=g)
    base, labels = torch.randn(s, n, c, generator=g), torch.randint(0, c, (s, n), generator=g)
    threads = set()
    real = cs.CacheFusion._seed_hits

    def seed_hits(self, *args):
        threads.add(threading.get_ident())
        return real(self, *args)

    monkeypatch.setattr(cs.CacheFusion, "_seed_hits", seed_hits)
    monkeypatch.setattr(cs, "CHUNK_AFFINITY_ELEMENTS", 20 * c * k)          # two row chunks per seed: 6 pieces
    candidates = [torch.rand(s, 5, generator=g) * 3 for _ in range(3)]
    saved = torch.get_num_threads()
    torch.set_num_threads(2)                                                 # two workers on the CPU
    with fake_cuda(), torch.inference_mode():
        to = (lambda t: t.to("cuda")) if device == "cuda" else (lambda t: t)
        q, kk = to(queries), to(keys)
        problem = cs.CacheFusion(to(base), to(labels), lambda i, rows: q[i, rows] @ kk[i].T,
                                 to(torch.ones(s, c * k)), None, "tip")
        try:
            hits = problem.hits(*(to(t) for t in candidates))
        finally:
            torch.set_num_threads(saved)
    assert hits.shape == (s, 5)
    # on a GPU the pieces queue on one stream: side by side they would only hold more slices in its memory
    assert threads == {threading.get_ident()} if device == "cuda" else len(threads) == 2


@pytest.mark.parametrize("name,search", CASES)
def test_every_method_fits_and_scores_on_the_device_as_on_the_cpu(name, search):
    m = REGISTRY[name]
    hp = {k: v for k, v in FAST.items() if k in m.defaults}
    if search:
        hp["search"] = search
    task, test_x, _ = make_task(seeds=(1, 2), dtype=torch.float64)
    cpu = m.logits(m.fit(task, **hp), test_x)
    with fake_cuda():
        state = m.fit(task.to("cuda"), **hp)
        logits = m.logits(state, test_x.to("cuda"))
        assert isinstance(logits, OnDevice) and logits.device.type == "cuda"
        logits = logits.cpu()
    torch.testing.assert_close(logits, cpu, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method,recipe", [("tip-adapter", "paper"), ("ape", "uniform"), ("gda", "paper"),
                                           ("semobridge", "uniform"), ("linear-probe", "uniform")])
def test_a_run_fitted_and_evaluated_on_the_device_equals_the_cpu_run(tmp_path, method, recipe):
    import clipbridge as cb
    from clipbridge.bridge.recipes import recipe_families
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.extract.views import get_family

    families = {f: get_family(f).copies for f in recipe_families("synthetic", [4], [method]) if f != "plain"}
    cache = cb.open_cache(write_synthetic_cache(tmp_path / "syn.h5", classes=5, train_per_class=8, dim=24, width=16,
                                                val=40, test=60, seed=3, families=families,
                                                named_cupl=("ape", "semobridge")))
    kwargs = dict(method=method, shots=4, seeds=[1, 2], recipe=recipe, dtype="float64")
    on_cpu = cb.fit(cache, device="cpu", **kwargs)
    with fake_cuda():
        on_gpu = cb.fit(cache, device="cuda", **kwargs)
        assert all(t.device.type == "cuda" for t in on_gpu.state.tensors.values() if isinstance(t, torch.Tensor))
        records = on_gpu.evaluate(cache, device="cuda", coverage=0.9)
    assert on_gpu.state.hparams == on_cpu.state.hparams
    expected = on_cpu.evaluate(cache, device="cpu", coverage=0.9)
    for got, want in zip(records, expected):
        for key in ("test_accuracy", "val_accuracy", "nll", "ece", "temperature", "coverage", "mean_set_size"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
