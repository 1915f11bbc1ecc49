"""APE's recipe: Tip-Adapter's views, CoOp + CuPL text, the official config per dataset.

APE_CONFIGS holds the official per-dataset configs (RECIPES.md §2.3, yangyangyang127/APE configs/<ds>.yaml,
all RN50, D = 1024), also read by APE-T's rows: the search scales of beta, alpha and gamma; init_alpha, lr, eps
and epochs of APE-T; k_free / k_train, the refined channels of APE / APE-T (k becomes the same fraction of
any width, k / 1024, bridge/methods/ape/channels.py); w_free, the [w0, w1] of APE's criterion. Outside the 11
datasets the defaults of bridge/methods/ape (the configs' medians) apply.
"""
from __future__ import annotations

from clipbridge.bridge.recipes.common import APE_CUPL

APE_WIDTH = 1024          # the configs' feature width (RN50)
#: the official search (main.py): the whole grid of the configs' steps, first strict maximum on validation
OFFICIAL_SEARCH = {"search": "grid"}


def _config(beta_scale, alpha_scale, gamma_scale, init_alpha, k_free, k_train, w_free, lr, eps, epochs) -> dict:
    return {"beta_scale": beta_scale, "alpha_scale": alpha_scale, "gamma_scale": gamma_scale,
            "init_alpha": init_alpha, "k_free": k_free, "k_train": k_train, "w_free": w_free, "lr": lr, "eps": eps,
            "epochs": epochs}


APE_CONFIGS = {
    "caltech101": _config(beta_scale=7, alpha_scale=7, gamma_scale=1, init_alpha=1.0, k_free=800, k_train=900,
                          w_free=(0.5, 0.5), lr=1e-3, eps=1e-3, epochs=30),
    "dtd": _config(beta_scale=7, alpha_scale=7, gamma_scale=1, init_alpha=3.0, k_free=400, k_train=700,
                   w_free=(0.5, 0.5), lr=1e-3, eps=1e-3, epochs=20),
    "eurosat": _config(beta_scale=30, alpha_scale=5, gamma_scale=1.5, init_alpha=1.0, k_free=700, k_train=900,
                       w_free=(0.9, 0.1), lr=1e-3, eps=1e-3, epochs=200),
    "fgvc_aircraft": _config(beta_scale=20, alpha_scale=10, gamma_scale=1, init_alpha=5.0, k_free=800, k_train=900,
                             w_free=(0.1, 0.9), lr=1e-3, eps=1e-3, epochs=30),
    "food101": _config(beta_scale=7, alpha_scale=7, gamma_scale=1, init_alpha=0.8, k_free=700, k_train=900,
                       w_free=(0.3, 0.7), lr=1e-4, eps=1e-3, epochs=30),
    "imagenet": _config(beta_scale=7, alpha_scale=7, gamma_scale=0.5, init_alpha=2.0, k_free=500, k_train=500,
                        w_free=(0.7, 0.3), lr=1e-4, eps=1e-3, epochs=20),
    "oxford_flowers": _config(beta_scale=7, alpha_scale=7, gamma_scale=1, init_alpha=3.0, k_free=700, k_train=800,
                              w_free=(0.4, 0.6), lr=1e-3, eps=1e-3, epochs=60),
    "oxford_pets": _config(beta_scale=7, alpha_scale=7, gamma_scale=1, init_alpha=2.0, k_free=800, k_train=800,
                           w_free=(0.7, 0.3), lr=1e-4, eps=2e-3, epochs=30),
    "stanford_cars": _config(beta_scale=10, alpha_scale=7, gamma_scale=1, init_alpha=1.0, k_free=500, k_train=800,
                             w_free=(0.6, 0.4), lr=1e-3, eps=5e-3, epochs=30),
    "sun397": _config(beta_scale=10, alpha_scale=7, gamma_scale=1, init_alpha=1.0, k_free=800, k_train=800,
                      w_free=(0.7, 0.3), lr=1e-4, eps=1e-3, epochs=30),
    "ucf101": _config(beta_scale=10, alpha_scale=7, gamma_scale=1.5, init_alpha=2.0, k_free=700, k_train=800,
                      w_free=(0.3, 0.7), lr=1e-3, eps=2e-3, epochs=30),
}
APE_TEXT = ("RECIPES.md §1 (APE: the CoOp template, ImageNet the 7, + APE's own CuPL sentences "
            "gpt3_prompts/CuPL_prompts_<ds>.json, the cache's text set cupl:ape)")
APE_DEFAULT_TEXT = ("ours outside the 11 datasets: APE's text, with CuPL sentences when the cache has them (its "
                    "set cupl:ape, else the unnamed cupl: there is no official file to prefer)")


def ape_rows(hparams_of, common: dict | None = None) -> dict[str, dict]:
    """APE's (or APE-T's) rows: `hparams_of(dataset, config)` turns an APE_CONFIGS entry into the fit's
    hyper-parameters; `common` are hyper-parameters of every dataset (the default row), beside the official
    search."""
    rows = {"default": {"families": ["tip"], "prompts": ["coop", APE_CUPL + "|cupl?"],
                        "prompts_source": APE_DEFAULT_TEXT,
                        "families_source": "RECIPES.md §2.3 (the cache exactly as Tip-Adapter's: 10 crop + flip "
                                           "passes)",
                        "hparams": {**OFFICIAL_SEARCH, **(common or {})},
                        "source": "ours for datasets outside the 11: the medians of the official configs "
                                  "(bridge/methods/ape defaults)"}}
    for name, config in APE_CONFIGS.items():
        rows[name] = {"hparams": {"beta_scale": float(config["beta_scale"]),
                                  "alpha_scale": float(config["alpha_scale"]), **hparams_of(name, config)},
                      "source": f"RECIPES.md §2.3 (yangyangyang127/APE configs/{name}.yaml)"}
    for name in APE_CONFIGS:
        rows[name].update(prompts=["ensemble" if name == "imagenet" else "coop", APE_CUPL], prompts_source=APE_TEXT)
    return rows


ROWS = ape_rows(lambda name, config: {
    "k_fraction": config["k_free"] / APE_WIDTH, "w0": config["w_free"][0], "w1": config["w_free"][1],
    "gamma_scale": float(config["gamma_scale"]), "gamma_steps": 5 if name == "imagenet" else 20})
