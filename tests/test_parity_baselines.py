"""`python -m clipbridge.bridge.parity` on Tip-Adapter and GDA fixtures (key `method` = "tip-adapter" / "gda"):
the authors' golden outputs are reproduced by the registered methods under their paper recipe's search, and
fixtures of other sizes, derived here literally from the official loops (RECIPES.md §2.2, §2.4), pass too."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipbridge.bridge.parity import main

TIP_KEYS = {"cache_keys", "test_logits_init", "best_params", "best_val_acc", "test_logits_best", "test_acc_best"}
GDA_KEYS = {"means", "precision", "weights", "bias", "alpha_grid", "best_alpha", "best_val_acc", "test_logits_best",
            "test_acc_best"}


def _lines(capsys):
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("name", ("tip_small.npz", "tip_wide.npz"))
def test_parity_reproduces_the_official_tip_adapter_fixture_with_the_exact_parameters(shared_dir, name, capsys):
    assert main([str(shared_dir / "golden" / name)]) == 0
    lines = _lines(capsys)
    assert lines[-1] == "6/6 keys within 1e-06 (float64), best_params exactly"
    assert {line.split()[0] for line in lines[:-1]} == TIP_KEYS


@pytest.mark.parametrize("name", ("gda_small.npz", "gda_wide.npz"))
def test_parity_reproduces_the_official_gda_fixture_with_the_exact_alpha(shared_dir, name, capsys):
    assert main([str(shared_dir / "golden" / name)]) == 0
    lines = _lines(capsys)
    assert lines[-1] == "9/9 keys within 1e-06 (float64), best_alpha, alpha_grid exactly"
    assert {line.split()[0] for line in lines[:-1]} == GDA_KEYS


@pytest.mark.parametrize("name, key, corrupt", [
    ("tip_small.npz", "best_params", lambda a: a + np.array([0.0, 1e-12])),     # far below the tolerance
    ("tip_small.npz", "cache_keys", lambda a: a * (1 + 1e-5)),
    ("gda_small.npz", "best_alpha", lambda a: a * 10),
    ("gda_small.npz", "precision", lambda a: a * (1 + 1e-5)),
], ids=["tip-best_params", "tip-cache_keys", "gda-best_alpha", "gda-precision"])
def test_parity_fails_a_corrupted_baseline_fixture_naming_the_key(shared_dir, tmp_path, name, key, corrupt, capsys):
    arrays = dict(np.load(shared_dir / "golden" / name))
    arrays[key] = corrupt(arrays[key])
    np.savez(tmp_path / "corrupt.npz", **arrays)
    assert main([str(tmp_path / "corrupt.npz")]) == 1
    assert [line.split()[0] for line in _lines(capsys) if "OFF" in line] == [key]


def _n(x):
    return x / x.norm(dim=-1, keepdim=True)


def _inputs(c, k, e, d, n_val, n_test, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    mu = r(c, d)
    text = _n(mu + 1.5 * r(c, d))
    view_y = torch.arange(c).repeat_interleave(k)
    views = 3.0 * (mu[view_y] + r(c * k, d)).unsqueeze(0) + 0.5 * r(e, c * k, d)
    val_y, test_y = torch.randint(0, c, (n_val,), generator=g), torch.randint(0, c, (n_test,), generator=g)
    return dict(clip_weights=text.T.contiguous(), views=views, view_labels=view_y, shots=torch.tensor(k),
                val=3.0 * (mu[val_y] + r(n_val, d)), val_labels=val_y, test=3.0 * (mu[test_y] + r(n_test, d)),
                test_labels=test_y)


def _accuracy(logits, labels):
    return 100.0 * float((logits.argmax(-1) == labels).double().mean())


def naive_tip_fixture(c, k, e, d, n_val, n_test, seed, scale=(7.0, 3.0), steps=(200, 20)):
    """A Tip-Adapter fixture whose outputs follow gaopengcuhk/Tip-Adapter's loops line by line."""
    f = _inputs(c, k, e, d, n_val, n_test, seed)
    keys = _n(f["views"].mean(0))
    values = torch.nn.functional.one_hot(f["view_labels"], c).to(torch.float64)

    def logits(q, beta, alpha):
        q = _n(q)
        return 100.0 * q @ f["clip_weights"] + ((-1) * (beta - beta * (q @ keys.T))).exp() @ values * alpha

    betas = [i * (scale[0] - 0.1) / steps[0] + 0.1 for i in range(steps[0])]
    alphas = [i * (scale[1] - 0.1) / steps[1] + 0.1 for i in range(steps[1])]
    best_acc, best = 0.0, (0.0, 0.0)
    for beta in betas:
        for alpha in alphas:
            acc = _accuracy(logits(f["val"], beta, alpha), f["val_labels"])
            if acc > best_acc:
                best_acc, best = acc, (beta, alpha)
    test_best = logits(f["test"], *best)
    out = dict(f, method=np.array("tip-adapter"), search_scale=torch.tensor(scale, dtype=torch.float64),
               search_steps=torch.tensor(steps), init_params=torch.tensor([1.0, 1.17], dtype=torch.float64),
               cache_keys=keys, test_logits_init=logits(f["test"], 1.0, 1.17),
               best_params=torch.tensor(best, dtype=torch.float64), best_val_acc=torch.tensor(best_acc),
               test_logits_best=test_best, test_acc_best=torch.tensor(_accuracy(test_best, f["test_labels"])))
    return {name: np.asarray(value) for name, value in out.items()}


def naive_gda_fixture(c, k, e, d, n_val, n_test, seed):
    """A GDA fixture whose outputs follow mrflogs/ICLR24's run() line by line (torch.cov, pinv)."""
    f = _inputs(c, k, e, d, n_val, n_test, seed)
    vecs = _n(f["views"].reshape(e * c * k, d))
    labels = f["view_labels"].repeat(e)
    mus = torch.stack([vecs[labels == i].mean(0) for i in range(c)])
    centred = torch.cat([vecs[labels == i] - mus[i] for i in range(c)])
    cov = centred.T.cov()
    precision = d * torch.linalg.pinv((centred.shape[0] - 1) * cov + cov.trace() * torch.eye(d, dtype=torch.float64))
    weights = precision @ mus.T                                                    # [D, C]
    bias = torch.log(torch.full((c,), 1.0 / c, dtype=torch.float64)) - 0.5 * (mus @ precision * mus).sum(-1)

    def logits(q, alpha):
        q = _n(q)
        return 100.0 * q @ f["clip_weights"] + alpha * (q @ weights + bias)

    grid = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0]
    best_acc, best = 0.0, 0.1
    for alpha in grid:
        acc = _accuracy(logits(f["val"], alpha), f["val_labels"])
        if acc > best_acc:
            best_acc, best = acc, alpha
    test_best = logits(f["test"], best)
    out = dict(f, method=np.array("gda"), alpha_grid=torch.tensor(grid, dtype=torch.float64), means=mus,
               precision=precision, weights=weights, bias=bias, best_alpha=torch.tensor(best, dtype=torch.float64),
               best_val_acc=torch.tensor(best_acc), test_logits_best=test_best,
               test_acc_best=torch.tensor(_accuracy(test_best, f["test_labels"])))
    return {name: np.asarray(value) for name, value in out.items()}


@pytest.mark.parametrize("maker, shape", [
    (naive_tip_fixture, dict(c=5, k=3, e=4, d=24, n_val=37, n_test=50, seed=3)),
    (naive_tip_fixture, dict(c=9, k=1, e=10, d=12, n_val=18, n_test=20, seed=4)),
    (naive_gda_fixture, dict(c=4, k=5, e=3, d=10, n_val=30, n_test=25, seed=5)),
    (naive_gda_fixture, dict(c=7, k=2, e=2, d=40, n_val=21, n_test=30, seed=6)),   # D > N: pinv of a singular matrix
], ids=["tip-a", "tip-b", "gda-a", "gda-wide"])
def test_parity_checks_baseline_fixtures_of_any_size(tmp_path, maker, shape, capsys):
    arrays = maker(**shape)
    np.savez(tmp_path / "gen.npz", **arrays)
    assert main([str(tmp_path / "gen.npz")]) == 0, _lines(capsys)
