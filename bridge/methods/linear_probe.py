"""Linear probe: multinomial logistic regression on CLIP image features (METHOD.md §5, RECIPES.md §2.6).

For every seed s, on every real support view x (n(f), or the raw f) with labels y, fitted by
bridge.logistic.fit_logistic (L-BFGS to convergence, S seeds × all candidate strengths in one batch):

    minimise_{W, b}  mean_i CE(x_i W + b, y_i) + (λ / 2) ‖W − W0‖²        (b not penalised)

init "zero": W0 = 0 (the classical probe). init "text" (CLAP-like): W0 = τ T̄ᵀ, so λ pulls the probe back
to zero-shot CLIP (a huge λ gives zero-shot logits plus a per-class bias fitted to the support); it needs
features "normalized" (the zero-shot logits are τ·cosines).

Two searches of the strength, on the task's validation queries (never test):

search "grid" (default, the project's uniform protocol): λ on a log grid (lambda_low … lambda_high,
    lambda_points values), highest validation accuracy, ties broken by the mean log-probability of the true
    class, then by the larger λ. Chosen: "lambda".
search "lpclip" (CoOp's linear probe, KaiyangZhou/CoOp lpclip/linear_probe.py): scikit-learn's inverse
    strength C, λ = 1/(C·n) with n real support views (sklearn's objective C Σ CE + ½‖W‖², scaled);
    `c_grid` in the given order, then `bisection_steps` log-bisection steps (bridge.log_bisection), scored by
    validation accuracy alone. Chosen: "C". With features "raw" this is lpclip: raw image features, sklearn
    LogisticRegression(lbfgs, multinomial, L2, tol 1e-4, max_iter 1000); the views are whatever the task
    holds (the lpclip recipe gives the plain view).

Every fit stops when max |gradient| of the summed objective Σ_i CE_i + (nλ/2)‖W − W0‖² is ≤ tol (how
scikit-learn applied its tol in CoOp's time, bridge/logistic.py), when the objective stops decreasing
representably, or after max_iter L-BFGS iterations (scikit-learn stops there too, with a ConvergenceWarning;
a weakly regularised fit on separable few-shot data can get there). info reports, per seed, the chosen fit's
iterations and stop reason ("lbfgs_iterations", "lbfgs_status") and how many fits of the search stopped at
max_iter ("lbfgs_capped_fits").
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import prepare_queries, support_views, validation, work_dtype
from clipbridge.bridge.fusion import log_grid, validation_scores
from clipbridge.bridge.hparams import POSITIVE, Items
from clipbridge.bridge.lbfgs import CAP, STATUS_NAMES
from clipbridge.bridge.log_bisection import grid_then_bisect
from clipbridge.bridge.logistic import fit_logistic
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.registry import FittedState, check_hparams, register_method
from clipbridge.bridge.text import class_text

RULES = {"features": ("normalized", "raw"), "search": ("grid", "lpclip"), "c_grid": Items(POSITIVE)}


def check_probe_hparams(hp: dict) -> None:
    """BridgeInputError for the one combination the value rules (bridge.hparams) cannot see."""
    if hp["init"] == "text" and hp["features"] != "normalized":
        raise BridgeInputError("linear-probe: init 'text' anchors the probe at zero-shot CLIP, which needs "
                               "features 'normalized'")


@register_method
class LinearProbe:
    name = "linear-probe"
    summary = "L2 logistic regression on the image features, regularisation chosen on validation (grid, or CoOp's lpclip search)"
    defaults = {"features": "normalized", "search": "grid", "lambda_low": 1e-6, "lambda_high": 1e-1,
                "lambda_points": 6, "c_grid": [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6], "bisection_steps": 8,
                "max_iter": 1000, "tol": 1e-4, "init": "zero"}
    rules = RULES

    def fit(self, task, **hparams) -> FittedState:
        hp = check_hparams(self, hparams)
        check_probe_hparams(hp)
        start = time.perf_counter()
        dtype = work_dtype(task)
        normalize = hp["features"] == "normalized"
        views = support_views(task, dtype, normalize)
        text = class_text(task, dtype).projected
        w0 = task.logit_scale * text.transpose(0, 1) if hp["init"] == "text" else torch.zeros_like(text.T)
        val_q, val_y = validation(task, dtype, normalize)
        capped = torch.zeros(task.num_seeds, dtype=torch.long, device=text.device)

        def solve(l2: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            """l2 [S, M] -> validation logits [S, M, Nv, C] and (weight, bias, iterations, status), [S, M, ...]."""
            nonlocal capped
            fit = fit_logistic(views.x, views.labels, views.mask, l2, w0, max_iter=hp["max_iter"], tol=hp["tol"])
            capped = capped + (fit.status == CAP).sum(-1)
            logits = val_q.unsqueeze(1) @ fit.weight + fit.bias.unsqueeze(2)
            return logits, (fit.weight, fit.bias, fit.iterations, fit.status)

        search = self._grid if hp["search"] == "grid" else self._lpclip
        (weight, bias, iterations, status), chosen, val_acc, extra, searched = search(
            solve, hp, val_y, int(views.mask.sum()), task.num_seeds, text)
        info = {"val_accuracy": val_acc.tolist(), "fit_seconds": time.perf_counter() - start,
                "search_seconds": time.perf_counter() - searched, "lbfgs_iterations": iterations.tolist(),
                "lbfgs_status": [STATUS_NAMES[i] for i in status.tolist()],
                "lbfgs_capped_fits": capped.tolist(), **extra}
        return FittedState(self.name, {"weight": weight, "bias": bias}, [{**hp, **c} for c in chosen], info)

    @staticmethod
    def _grid(solve, hp: dict, val_y: Tensor, count: int, num_seeds: int, like: Tensor):
        """All λ of the grid fitted at once, then the validation choice; returns (the chosen fits' tensors
        [S, ...], [{"lambda": λ}] per seed, validation accuracy [S], info extras, time the search began)."""
        lambdas = log_grid(hp["lambda_low"], hp["lambda_high"], int(hp["lambda_points"]), dtype=like.dtype,
                           device=like.device)
        logits, fitted = solve(lambdas.expand(num_seeds, -1))
        searched = time.perf_counter()
        acc, logp = validation_scores(logits, val_y)                                     # [S, G] each
        best_acc = acc.max(-1, keepdim=True).values
        ranking = torch.where(acc == best_acc, logp, torch.full_like(logp, -float("inf")))
        pick = lambdas.numel() - 1 - ranking.flip(-1).argmax(-1)                        # larger λ on ties
        rows = torch.arange(num_seeds, device=pick.device)
        chosen = [{"lambda": float(lambdas[i])} for i in pick.tolist()]
        extra = {"val_accuracy_per_lambda": acc.tolist(), "lambdas": lambdas.tolist()}
        return tuple(f[rows, pick] for f in fitted), chosen, acc[rows, pick], extra, searched

    @staticmethod
    def _lpclip(solve, hp: dict, val_y: Tensor, count: int, num_seeds: int, like: Tensor):
        """CoOp's C grid then log-bisection (fits interleaved with the choice); same returns as _grid with
        [{"C": C}] per seed."""
        searched = time.perf_counter()

        def fit_score(c: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            logits, fitted = solve(1.0 / (c * count))
            return accuracy(logits, val_y.unsqueeze(1)), fitted

        choice = grid_then_bisect(fit_score, hp["c_grid"], hp["bisection_steps"], num_seeds, device=like.device)
        extra = {"val_accuracy_per_c": choice.grid_accuracy.tolist(), "c_grid": list(hp["c_grid"]),
                 "bisection_ends": choice.ends.tolist(), "bisection_accuracy": choice.end_accuracy.tolist()}
        return choice.fitted, [{"C": c} for c in choice.value.tolist()], choice.accuracy, extra, searched

    def logits(self, state: FittedState, queries: Tensor) -> Tensor:
        w = state.tensors["weight"]
        raw = bool(state.hparams) and state.hparams[0].get("features") == "raw"
        q = prepare_queries(queries, len(state.hparams), w, dim=w.shape[-2], normalize=not raw)
        return q @ w + state.tensors["bias"].unsqueeze(1)
