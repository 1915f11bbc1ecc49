"""Tip-Adapter's recipe: 10 crop + flip passes, the CoOp template, the official search box per dataset.

TIP_CONFIGS holds the official per-dataset configs (RECIPES.md §2.2, gaopengcuhk/Tip-Adapter
configs/<dataset>.yaml), also read by Tip-Adapter-F's rows: search_scale [beta_scale, alpha_scale],
init_alpha and Tip-Adapter-F's epochs. One setting for all shot counts.
"""
from __future__ import annotations

from clipbridge.bridge.recipes.common import COOP_TEXT


def _config(beta_scale: int, alpha_scale: int, init_alpha: float, epochs: int) -> dict:
    return {"beta_scale": beta_scale, "alpha_scale": alpha_scale, "init_alpha": init_alpha, "epochs": epochs}


TIP_CONFIGS = {
    "caltech101": _config(beta_scale=12, alpha_scale=5, init_alpha=3.0, epochs=20),
    "dtd": _config(beta_scale=13, alpha_scale=13, init_alpha=2.0, epochs=20),
    "eurosat": _config(beta_scale=12, alpha_scale=10, init_alpha=2.0, epochs=100),
    "fgvc_aircraft": _config(beta_scale=30, alpha_scale=30, init_alpha=5.0, epochs=20),
    "food101": _config(beta_scale=10, alpha_scale=10, init_alpha=1.17, epochs=20),
    "imagenet": _config(beta_scale=7, alpha_scale=3, init_alpha=1.17, epochs=20),
    "oxford_flowers": _config(beta_scale=50, alpha_scale=50, init_alpha=10.0, epochs=20),
    "oxford_pets": _config(beta_scale=7, alpha_scale=3, init_alpha=1.17, epochs=20),
    "stanford_cars": _config(beta_scale=20, alpha_scale=10, init_alpha=3.0, epochs=20),
    "sun397": _config(beta_scale=12, alpha_scale=10, init_alpha=1.17, epochs=20),
    "ucf101": _config(beta_scale=7, alpha_scale=3, init_alpha=3.0, epochs=20),
}
#: ours for other datasets: the most common box and init alpha, 20 epochs
TIP_DEFAULT = _config(beta_scale=10, alpha_scale=10, init_alpha=1.17, epochs=20)
TIP_DEFAULT_SOURCE = "ours for datasets outside the 11: box [0.1, 10]^2, init alpha 1.17, 20 epochs"
#: Tip-Adapter-F's training outside the per-dataset values (the official main.py / configs); the official loop
#: keeps the best of epochs 1..E (first strict maximum; on test data there, on validation here)
TIP_F_TRAINING = {"init_beta": 1.0, "lr": 1e-3, "eps": 1e-4, "weight_decay": 0.01, "batch_size": 256,
                  "schedule": "cosine", "train_views": "cycle", "select": "trained-epochs"}


def tip_search(config: dict) -> dict:
    """The validation search of a TIP_CONFIGS entry: the official grid alone (search "grid": 200 beta x 20 alpha
    points, endpoint excluded, beta outer, first strict maximum) over alpha in [0.1, alpha_scale] x beta in
    [0.1, beta_scale]."""
    return {"search": "grid", "alpha_low": 0.1, "alpha_high": float(config["alpha_scale"]), "beta_low": 0.1,
            "beta_high": float(config["beta_scale"]), "grid_alpha": 20, "grid_beta": 200, "grid_endpoint": False}


def tip_rows(hparams_of) -> dict[str, dict]:
    """Tip-Adapter's (or Tip-Adapter-F's) rows: `hparams_of(config)` turns a TIP_CONFIGS entry into the fit's
    hyper-parameters."""
    rows = {"default": {"families": ["tip"], "prompts": ["coop"],
                        "families_source": "RECIPES.md §2.2 (10 passes of crop (0.5-1) + flip, augment_epoch 10)",
                        "prompts_source": COOP_TEXT, "hparams": hparams_of(TIP_DEFAULT),
                        "source": TIP_DEFAULT_SOURCE}}
    for name, config in TIP_CONFIGS.items():
        rows[name] = {"hparams": hparams_of(config),
                      "source": f"RECIPES.md §2.2 (gaopengcuhk/Tip-Adapter configs/{name}.yaml)"}
    rows["imagenet"].update(prompts=["ensemble"], prompts_source=COOP_TEXT)
    return rows


ROWS = tip_rows(tip_search)
