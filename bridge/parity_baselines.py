"""Recompute of the golden Tip-Adapter and GDA fixtures (key `method` = "tip-adapter" / "gda") with the
registered methods under their paper recipe's search, for `python -m clipbridge.bridge.parity`.

Inputs (both; float64, any C, K, E, D, N): clip_weights [D, C] (columns n(class text)); views [E, C·K, D] raw
embeddings of the few-shot images, one slice per augmentation pass, class-major, view_labels [C·K], shots K;
val, test [N, D] raw queries and their labels. Tip-Adapter also: search_scale [2] = (β, α) box tops,
search_steps [2], init_params [2] = (β, α). GDA also: alpha_grid [7].

The fixture becomes a one-seed FewShotTask: support [1, C, K·E, D] (each image's E views shot-major, V = E),
one prompt per class (the column of clip_weights), τ = 100, val as validation. The method is fitted with its
paper recipe's hyper-parameters (bridge/recipes; Tip-Adapter: the official grid, search="grid", over the
fixture's box and steps; GDA: the α list alone, search="grid") and every output is read off the fitted state:
Tip-Adapter's cache_keys (n(mean of each image's views)), test_logits_init, best_params = (β, α), best_val_acc,
test_logits_best, test_acc_best; GDA's means, precision, weights [D, C], bias, alpha_grid, best_alpha,
best_val_acc, test_logits_best, test_acc_best. The chosen parameters and the α grid must match exactly.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.features import support_views
from clipbridge.bridge.fusion import log_grid
from clipbridge.bridge.methods.gda import gda_statistics
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.recipes.resolve import resolve_recipe
from clipbridge.bridge.recipes.tip_adapter import tip_search
from clipbridge.bridge.registry import REGISTRY
from clipbridge.bridge.task import FewShotTask

EXACT_KEYS = {"tip-adapter": ("best_params",), "gda": ("best_alpha", "alpha_grid")}
LOGIT_SCALE = 100.0
FIXTURE_DATASET = "golden-fixture"          # no paper-recipe row: each method's default row


def fixture_task(f: dict) -> FewShotTask:
    """The one-seed task of a fixture (module docstring)."""
    views, labels = f["views"], f["view_labels"]
    e, n, d = views.shape
    c, shots = f["clip_weights"].shape[1], int(f["shots"])
    if n != c * shots or not torch.equal(labels, torch.arange(c).repeat_interleave(shots)):
        raise BridgeInputError("views/view_labels are not C·K class-major images")
    support = views.permute(1, 0, 2).reshape(1, c, shots * e, d)                 # each image's E views together
    return FewShotTask(support=support, support_mask=torch.ones(c, shots * e, dtype=torch.bool),
                       text_projected=f["clip_weights"].T.contiguous(), text_eos=None, text_class=torch.arange(c),
                       text_projection=None, logit_scale=LOGIT_SCALE, val=f["val"].unsqueeze(0),
                       val_labels=f["val_labels"].unsqueeze(0), views=e)


def paper_hparams(method: str, shots: int) -> dict:
    """The hyper-parameters of `method`'s paper recipe on a dataset without a row of its own."""
    return dict(resolve_recipe(method, FIXTURE_DATASET, shots).hparams)


def recompute_tip(f: dict) -> dict[str, Tensor]:
    """Every output key of a Tip-Adapter fixture (module docstring)."""
    method, task = REGISTRY["tip-adapter"], fixture_task(f)
    (beta_scale, alpha_scale), (beta_steps, alpha_steps) = f["search_scale"].tolist(), f["search_steps"].tolist()
    hp = {**paper_hparams("tip-adapter", int(f["shots"])),
          **tip_search({"beta_scale": beta_scale, "alpha_scale": alpha_scale}),
          "grid_beta": int(beta_steps), "grid_alpha": int(alpha_steps)}
    state = method.fit(task, **hp)
    init = {"beta": f["init_params"][0:1], "alpha": f["init_params"][1:2]}
    init_state = replace(state, tensors={**state.tensors, **init})
    test_best = method.logits(state, f["test"])[0]
    chosen = state.hparams[0]
    return {"cache_keys": state.tensors["keys"][0],
            "test_logits_init": method.logits(init_state, f["test"])[0],
            "best_params": torch.tensor([chosen["beta"], chosen["alpha"]], dtype=torch.float64),
            "best_val_acc": torch.tensor(state.info["val_accuracy"][0], dtype=torch.float64),
            "test_logits_best": test_best, "test_acc_best": accuracy(test_best, f["test_labels"])}


def recompute_gda(f: dict) -> dict[str, Tensor]:
    """Every output key of a GDA fixture (module docstring)."""
    method, task = REGISTRY["gda"], fixture_task(f)
    hp = paper_hparams("gda", int(f["shots"]))
    state = method.fit(task, **hp)
    views = support_views(task, torch.float64)
    means, precision = gda_statistics(views.x, views.labels, views.mask, task.num_classes)
    test_best = method.logits(state, f["test"])[0]
    return {"means": means[0], "precision": precision[0], "weights": state.tensors["weight"][0].T,
            "bias": state.tensors["bias"][0],
            "alpha_grid": log_grid(hp["alpha_low"], hp["alpha_high"], int(hp["alpha_points"])),
            "best_alpha": torch.tensor(state.hparams[0]["alpha"], dtype=torch.float64),
            "best_val_acc": torch.tensor(state.info["val_accuracy"][0], dtype=torch.float64),
            "test_logits_best": test_best, "test_acc_best": accuracy(test_best, f["test_labels"])}


def recompute_baseline(fx: dict, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """The outputs of a "tip-adapter" or "gda" fixture, computed in `dtype`."""
    f = {k: (v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v) for k, v in fx.items()}
    return recompute_tip(f) if fx["method"] == "tip-adapter" else recompute_gda(f)
