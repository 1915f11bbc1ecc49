"""`python -m clipbridge.bridge.parity`: the authors' golden outputs are reproduced, and any fixture of the format
(any C, K, P, W, D, N; W > D and W < D) is checked against a straightforward re-derivation of METHOD.md."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipbridge.bridge.parity import compare, load_npz, main

FIXTURES = ("semobridge_wide.npz", "semobridge_tall.npz")


@pytest.mark.parametrize("name", FIXTURES)
def test_parity_reproduces_the_golden_fixture_in_float64(shared_dir, name, capsys):
    assert main([str(shared_dir / "golden" / name)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("24/24 keys within 1e-06")


@pytest.mark.parametrize("name", FIXTURES)
def test_parity_reproduces_the_golden_fixture_in_float32_within_1e4(shared_dir, name):
    errors = compare(load_npz(shared_dir / "golden" / name), torch.float32)
    assert len(errors) == 24 and max(errors.values()) < 1e-4


def _n(x):
    return x / x.norm(dim=-1, keepdim=True)


def naive_fixture(c, k, p, w, d, n_val, n_test, seed):
    """Inputs and outputs of the golden format, outputs derived literally from METHOD.md §1–3."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u, _, vh = torch.linalg.svd(r(w, d), full_matrices=False)
    sing = torch.linspace(0.05, 2.0, min(w, d), dtype=torch.float64)       # some below the 0.3 cut
    wt = u @ torch.diag(sing) @ vh
    eos = r(c, p, w) + 3 * r(c, 1, w)
    mu = r(c, d)
    fewshot, val, test = mu[:, None] + r(c, k, d), r(n_val, d), r(n_test, d)
    val_y, test_y = torch.randint(0, c, (n_val,), generator=g), torch.randint(0, c, (n_test,), generator=g)
    val, test = val + mu[val_y], test + mu[test_y]

    t_bar = _n(_n(eos @ wt).mean(1))
    e_bar = _n(_n(eos).mean(1))
    ell = eos.mean(1).norm(dim=-1).mean()
    uu, ss, vv = torch.linalg.svd(wt, full_matrices=False)
    keep = ss >= 0.3
    b0 = vv[keep].T @ torch.diag(1 / ss[keep]) @ uu[:, keep].T

    def bridge(x, b_mat, bias=0.0):
        e_hat = ell * _n(x @ b_mat + bias)
        return e_hat @ wt, e_hat

    xh, eh = bridge(fewshot, b0)
    f_bar, protos = _n(fewshot.mean(1)), _n(xh.mean(1))
    out = dict(text_projection=wt, text_eos=eos, fewshot=fewshot, val=val, val_labels=val_y, test=test,
               test_labels=test_y, text_projected_normed=t_bar, text_encoded_normed=e_bar,
               text_encoded=eos.mean(1), avg_text_length=ell, pinv=b0, bridged_fewshot_projected=xh,
               bridged_fewshot_eos=eh, prototypes=protos)
    for name, q in (("val", val), ("test", test)):
        out[f"{name}_S1"], out[f"{name}_S2"] = _n(q) @ t_bar.T, _n(q) @ protos.T
        out[f"{name}_S3"] = _n(bridge(q, b0)[0]) @ f_bar.T
    pcc = torch.softmax(f_bar @ t_bar.T, dim=1).diagonal()
    div = torch.log2((1 + 1e-6) / (pcc + 1e-6))
    out["divergence"] = div[:, None]
    params = torch.rand(8, 7, generator=g, dtype=torch.float64) * torch.tensor([1.5, 10, 10, 10, 1, 1, 1])
    out["blend_params"] = params
    logits = []
    for s, a, b, gm, l1, l2, l3 in params.tolist():
        wgt = torch.exp(s * div)
        a1, a2, a3 = (torch.exp(-th * (1 - out[f"test_S{i}"])) for i, th in ((1, a), (2, b), (3, gm)))
        logits.append(l1 * a1 + l2 * a2 * wgt + l3 * a3 * wgt)
    out["blend_test_logits"] = torch.stack(logits)

    train_b = (b0 + 0.01 * r(d, w)).requires_grad_(True)
    train_bias = (0.05 * r(c, w)).requires_grad_(True)
    xh, eh = bridge(fewshot, train_b, train_bias[:, None])
    protos, uprot = _n(xh.mean(1)), _n(eh.mean(1))
    y, ce = torch.arange(c).repeat_interleave(k), torch.nn.functional.cross_entropy
    losses = {
        "img": ce(100 * _n(fewshot.reshape(c * k, d)) @ protos.T, y),
        "txtp": ce(protos @ t_bar.T, torch.arange(c)),
        "txte": ce(uprot @ e_bar.T, torch.arange(c)),
        "cons": ce(_n(xh.reshape(c * k, d)) @ protos.T, y),
        "bias": ((train_bias.norm(dim=-1) - train_bias.norm(dim=-1).mean()) ** 2).mean(),
    }
    total = 0.5 * losses["img"] + 0.25 * losses["txtp"] + 0.25 * losses["txte"] + 0.1 * losses["cons"] \
        + 0.1 * losses["bias"]
    total.backward()
    out.update({f"loss_{k}": v.detach() for k, v in losses.items()}, loss_total=total.detach(),
               train_B=train_b.detach(), train_bias=train_bias.detach(), grad_B=train_b.grad,
               grad_bias=train_bias.grad)
    return {k: np.asarray(v.detach()) for k, v in out.items()}


@pytest.mark.parametrize("shape", [dict(c=6, k=3, p=4, w=24, d=16), dict(c=5, k=2, p=3, w=12, d=20)],
                         ids=["wide", "tall"])
def test_parity_checks_any_generated_fixture_and_fails_on_a_wrong_key(tmp_path, shape, capsys):
    arrays = naive_fixture(**shape, n_val=30, n_test=40, seed=1)
    assert int((np.linalg.svd(arrays["text_projection"], compute_uv=False) < 0.3).sum()) > 0
    path = tmp_path / "gen.npz"
    np.savez(path, **arrays)
    assert main([str(path)]) == 0
    arrays["grad_bias"] = arrays["grad_bias"] * (1 + 1e-4)
    np.savez(path, **arrays)
    assert main([str(path)]) == 1
    assert "grad_bias" in [line.split()[0] for line in capsys.readouterr().out.splitlines() if "OFF" in line]


def test_parity_reports_an_unreadable_fixture(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main([str(bad)]) == 2


# ---------------------------------------------------------------- APE (key method = "ape")

APE_FIXTURES = ("ape_small.npz", "ape_wide.npz")


@pytest.mark.parametrize("name", APE_FIXTURES)
def test_parity_reproduces_the_official_ape_fixture_with_exact_channels_and_parameters(shared_dir, name, capsys):
    assert main([str(shared_dir / "golden" / name)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "7/7 keys within 1e-06 (float64), indices, best_params exactly"
    assert {line.split()[0] for line in lines[:-1]} == {"indices", "cache_div", "test_logits_init", "best_params",
                                                        "best_val_acc", "test_logits_best", "test_acc_best"}


def _swap_first_two(a):
    a = a.copy()
    a[[0, 1]] = a[[1, 0]]
    return a


@pytest.mark.parametrize("key, corrupt", [
    ("indices", _swap_first_two),                                   # same channels, another order
    ("best_params", lambda a: a + np.array([0.0, 0.0, 1e-12])),     # off by far less than the tolerance
    ("cache_div", lambda a: a * (1 + 1e-5)),
    ("test_logits_best", lambda a: a * (1 + 1e-5)),
], ids=["indices", "best_params", "cache_div", "test_logits_best"])
def test_parity_fails_a_corrupted_ape_fixture_naming_the_key(shared_dir, tmp_path, key, corrupt, capsys):
    arrays = dict(np.load(shared_dir / "golden" / "ape_small.npz"))
    arrays[key] = corrupt(arrays[key])
    path = tmp_path / "corrupt.npz"
    np.savez(path, **arrays)
    assert main([str(path)]) == 1
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines() if "OFF" in line] == [key]


def test_parity_refuses_a_fixture_of_an_unknown_method(shared_dir, tmp_path, capsys):
    arrays = dict(np.load(shared_dir / "golden" / "ape_small.npz"))
    arrays["method"] = np.array("tip")
    np.savez(tmp_path / "other.npz", **arrays)
    assert main([str(tmp_path / "other.npz")]) == 2
    assert "unknown fixture method 'tip'" in capsys.readouterr().err
