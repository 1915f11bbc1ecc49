"""The paper recipes, as data: per method, a default row and rows per dataset ("dtd") and per dataset and
shot count ("dtd@16"), each with the RECIPES.md section it comes from. evaluate/recipes/resolve.py merges
default <- dataset <- dataset@shots for a (method, dataset, shots).

Row fields (all optional but `source`):
    families  view families of the support images, in order; "name:n" = the first n copies of a family
    prompts   text sets of the cache; a trailing "?" = used when the cache has it
    hparams   hyper-parameters of the method's fit (bridge/methods/*.py defaults otherwise)
    source    where the row's values come from; `<field>_source` when one field has another source

The datasets are the CoOp names of extract/datasets (imagenet, caltech101, oxford_pets, stanford_cars,
oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101); any other dataset (imagefolder,
splitfile, shapes) gets the default row of each method.
"""
from __future__ import annotations

PLAIN, FLIP = ["plain"], ["plain", "flip"]
R05J, R08, R08J = ["plain", "semo-r0.5-j"], ["plain", "semo-r0.8"], ["plain", "semo-r0.8-j"]
COOP_TEXT = "RECIPES.md §1 (templates: the CoOp template; ImageNet: the 7 select templates)"

# SeMoBridge's few-shot views per dataset and shot count (RECIPES.md §2.1, INPUT.FEW_SHOT_AUGMENTATION of
# configs/datasets/<dataset>.yaml): "-" plain only, F = + mirrored copy, R(s) = + 10 random crops of scale
# (s, 1), ratio 1, + flip, J = + ColorJitter. Also CMM's (our choice, see below).
SEMOBRIDGE_VIEWS = {
    "default": {"families": PLAIN, "source": "ours: no augmentation outside the 11 datasets (the helpful views "
                                             "are dataset-specific in RECIPES.md §2.1)"},
    **{name: {"families": PLAIN, "source": "RECIPES.md §2.1 (caltech101/oxford_pets/food101.yaml: none)"}
       for name in ("caltech101", "oxford_pets", "food101")},
    **{name: {"families": FLIP, "source": "RECIPES.md §2.1 (imagenet/sun397/ucf101.yaml: F)"}
       for name in ("imagenet", "sun397", "ucf101")},
    "eurosat": {"families": FLIP, "source": "RECIPES.md §2.1 (eurosat.yaml: F)"},
    "eurosat@2": {"families": R05J, "source": "RECIPES.md §2.1 (eurosat.yaml: 2 shots 10xR(0.5)+J)"},
    "fgvc_aircraft": {"families": FLIP, "source": "RECIPES.md §2.1 (fgvc_aircraft.yaml: F)"},
    "fgvc_aircraft@1": {"families": R05J, "source": "RECIPES.md §2.1 (fgvc_aircraft.yaml: 1 shot 10xR(0.5)+J)"},
    "oxford_flowers": {"families": FLIP, "source": "RECIPES.md §2.1 (oxford_flowers.yaml: F)"},
    "oxford_flowers@1": {"families": R05J, "source": "RECIPES.md §2.1 (oxford_flowers.yaml: 1 shot 10xR(0.5)+J)"},
    "oxford_flowers@4": {"families": R05J, "source": "RECIPES.md §2.1 (oxford_flowers.yaml: 4 shots 10xR(0.5)+J)"},
    "stanford_cars": {"families": FLIP, "source": "RECIPES.md §2.1 (stanford_cars.yaml: F)"},
    "stanford_cars@1": {"families": R08, "source": "RECIPES.md §2.1 (stanford_cars.yaml: 1 shot 10xR(0.8), no J)"},
    "dtd": {"families": PLAIN, "source": "RECIPES.md §2.1 (dtd.yaml: 8 shots none)"},
    "dtd@1": {"families": R05J, "source": "RECIPES.md §2.1 (dtd.yaml: 1 shot 10xR(0.5)+J)"},
    "dtd@2": {"families": R05J, "source": "RECIPES.md §2.1 (dtd.yaml: 2 shots 10xR(0.5)+J)"},
    "dtd@4": {"families": R08J, "source": "RECIPES.md §2.1 (dtd.yaml: 4 shots 10xR(0.8)+J)"},
    "dtd@16": {"families": ["plain", "semo-r0.8-j:5"], "source": "RECIPES.md §2.1 (dtd.yaml: 16 shots 5xR(0.8)+J)"},
}
SEMOBRIDGE_TEXT = {"prompts": ["ensemble", "cupl"],
                   "source": "RECIPES.md §1 (SeMoBridge: clip_ensemble + cupl_full, one flat list)"}


def _semobridge(extra: dict[str, dict]) -> dict[str, dict]:
    """SeMoBridge's views and text per dataset, plus `extra` hyper-parameter rows {key: {hparams, source}}."""
    rows = {key: dict(row) for key, row in SEMOBRIDGE_VIEWS.items()}
    rows["default"].update(prompts=["ensemble", "cupl?"],
                           prompts_source="ours: SeMoBridge's text, CuPL when the cache has it (RECIPES.md §1)")
    for name in ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"):
        rows[name].update(prompts=SEMOBRIDGE_TEXT["prompts"], prompts_source=SEMOBRIDGE_TEXT["source"])
    for key, row in extra.items():
        rows.setdefault(key, {"source": row["source"]}).update(hparams=row["hparams"], hparams_source=row["source"])
    return rows


# Tip-Adapter's per-dataset configs (RECIPES.md §2.2, configs/<ds>.yaml): search_scale [beta, alpha],
# init alpha, Tip-Adapter-F epochs. One setting for all shot counts.
TIP_CONFIGS = {
    "caltech101": (12, 5, 3.0, 20), "dtd": (13, 13, 2.0, 20), "eurosat": (12, 10, 2.0, 100),
    "fgvc_aircraft": (30, 30, 5.0, 20), "food101": (10, 10, 1.17, 20), "imagenet": (7, 3, 1.17, 20),
    "oxford_flowers": (50, 50, 10.0, 20), "oxford_pets": (7, 3, 1.17, 20), "stanford_cars": (20, 10, 3.0, 20),
    "sun397": (12, 10, 1.17, 20), "ucf101": (7, 3, 3.0, 20),
}
TIP_DEFAULT = (10, 10, 1.17, 20)     # ours for other datasets: the most common box and init alpha, 20 epochs


def _tip_search(beta_scale: float, alpha_scale: float) -> dict:
    return {"alpha_low": 0.1, "alpha_high": float(alpha_scale), "beta_low": 0.1, "beta_high": float(beta_scale),
            "grid_alpha": 20, "grid_beta": 200, "grid_endpoint": False}


def _tip(finetune: bool) -> dict[str, dict]:
    def row(config, source):
        beta, alpha, init_alpha, epochs = config
        hparams = _tip_search(beta, alpha)
        if finetune:
            hparams.update({"epochs": epochs, "init_alpha": init_alpha, "init_beta": 1.0, "lr": 1e-3, "eps": 1e-4,
                            "weight_decay": 0.01, "batch_size": 256, "schedule": "cosine", "train_views": "cycle"})
        return {"hparams": hparams, "source": source}

    rows = {"default": {"families": ["tip"], "prompts": ["coop"],
                        "families_source": "RECIPES.md §2.2 (10 passes of crop (0.5-1) + flip, augment_epoch 10)",
                        "prompts_source": COOP_TEXT,
                        **row(TIP_DEFAULT, "ours for datasets outside the 11: box [0.1, 10]^2, init alpha 1.17, "
                                           "20 epochs")}}
    for name, config in TIP_CONFIGS.items():
        rows[name] = row(config, f"RECIPES.md §2.2 (gaopengcuhk/Tip-Adapter configs/{name}.yaml)")
    rows["imagenet"].update(prompts=["ensemble"], prompts_source=COOP_TEXT)
    return rows


# APE's per-dataset configs (RECIPES.md §2.3, yangyangyang127/APE configs/<ds>.yaml, all RN50, D = 1024):
# scale [beta, alpha, gamma], init alpha, k free, k train, w_free, APE-T lr, eps, epochs. k becomes the same
# fraction of any width (k / 1024, bridge/methods/ape/channels.py).
APE_CONFIGS = {
    "caltech101": ((7, 7, 1), 1.0, 800, 900, (0.5, 0.5), 1e-3, 1e-3, 30),
    "dtd": ((7, 7, 1), 3.0, 400, 700, (0.5, 0.5), 1e-3, 1e-3, 20),
    "eurosat": ((30, 5, 1.5), 1.0, 700, 900, (0.9, 0.1), 1e-3, 1e-3, 200),
    "fgvc_aircraft": ((20, 10, 1), 5.0, 800, 900, (0.1, 0.9), 1e-3, 1e-3, 30),
    "food101": ((7, 7, 1), 0.8, 700, 900, (0.3, 0.7), 1e-4, 1e-3, 30),
    "imagenet": ((7, 7, 0.5), 2.0, 500, 500, (0.7, 0.3), 1e-4, 1e-3, 20),
    "oxford_flowers": ((7, 7, 1), 3.0, 700, 800, (0.4, 0.6), 1e-3, 1e-3, 60),
    "oxford_pets": ((7, 7, 1), 2.0, 800, 800, (0.7, 0.3), 1e-4, 2e-3, 30),
    "stanford_cars": ((10, 7, 1), 1.0, 500, 800, (0.6, 0.4), 1e-3, 5e-3, 30),
    "sun397": ((10, 7, 1), 1.0, 800, 800, (0.7, 0.3), 1e-4, 1e-3, 30),
    "ucf101": ((10, 7, 1.5), 2.0, 700, 800, (0.3, 0.7), 1e-3, 2e-3, 30),
}
APE_TEXT = ("RECIPES.md §1 (APE: the CoOp template, ImageNet the 7, + CuPL sentences; the cache's `cupl` set when "
            "it has one, which should be APE's gpt3_prompts/CuPL_prompts_<ds>.json for exact text)")


def _ape(trained: bool) -> dict[str, dict]:
    """APE's (trained: APE-T's) rows: Tip-Adapter's views, CoOp + CuPL text, the official config per dataset;
    the defaults of bridge/methods/ape (the configs' medians) elsewhere."""
    rows = {"default": {"families": ["tip"], "prompts": ["coop", "cupl?"], "prompts_source": APE_TEXT,
                        "families_source": "RECIPES.md §2.3 (the cache exactly as Tip-Adapter's: 10 crop + flip "
                                           "passes)",
                        "source": "ours for datasets outside the 11: the medians of the official configs "
                                  "(bridge/methods/ape defaults)"}}
    for name, (scale, init_alpha, k_free, k_train, w_free, lr, eps, epochs) in APE_CONFIGS.items():
        beta, alpha, gamma = scale
        hparams = {"beta_scale": float(beta), "alpha_scale": float(alpha)}
        if trained:
            hparams.update({"k_fraction": k_train / 1024, "w0": 0.2, "w1": 0.8, "init_alpha": init_alpha,
                            "init_beta": 1.0, "lr": lr, "eps": eps, "epochs": epochs})
        else:
            hparams.update({"k_fraction": k_free / 1024, "w0": w_free[0], "w1": w_free[1],
                            "gamma_scale": float(gamma), "gamma_steps": 5 if name == "imagenet" else 20})
        rows[name] = {"hparams": hparams, "source": f"RECIPES.md §2.3 (yangyangyang127/APE configs/{name}.yaml)"}
    rows["imagenet"].update(prompts=["ensemble", "cupl?"], prompts_source=APE_TEXT)
    return rows


RECIPES: dict[str, dict[str, dict]] = {
    "zeroshot": {
        "default": {"families": PLAIN, "prompts": ["coop"], "source": COOP_TEXT},
        "imagenet": {"prompts": ["ensemble"], "source": COOP_TEXT},
    },
    "tip-adapter": _tip(finetune=False),
    "tip-adapter-f": _tip(finetune=True),
    "ape": _ape(trained=False),
    "ape-t": _ape(trained=True),
    "clip-adapter": {
        "default": {"families": ["coop-rrc"], "prompts": ["coop"],
                    "source": "RECIPES.md §2.5 (SeMoBridge's CLIP-Adapter vit_b16 config: Dassl random resized crop "
                              "0.08-1 + flip, CoOp template; SGD lr 0.002, batch 32, 200 epochs, 1 warm-up epoch, "
                              "cosine = bridge/methods/clip_adapter.py defaults)"},
    },
    "gda": {
        "default": {"families": ["tip"], "prompts": ["coop"],
                    "hparams": {"alpha_low": 1e-4, "alpha_high": 100.0, "alpha_points": 7},
                    "source": "RECIPES.md §2.4 (mrflogs/ICLR24: 10 crop+flip views kept separately, alpha in "
                              "1e-4..100); " + COOP_TEXT},
        "imagenet": {"prompts": ["ensemble"], "source": COOP_TEXT},
    },
    "linear-probe": {
        "default": {"families": PLAIN, "prompts": ["coop"], "hparams": {"features": "raw", "search": "lpclip"},
                    "source": "RECIPES.md §2.6 (CoOp lpclip: raw features of the test transform, no augmentation; "
                              "L2 logistic regression to convergence, the C grid then 8 log-bisection steps)"},
    },
    "semobridge": _semobridge({}),
    "semobridge-t": _semobridge({
        "imagenet": {"hparams": {"selection": "last"},
                     "source": "RECIPES.md §2.1 (imagenet.yaml FINAL_MODEL last_step)"},
        "dtd": {"hparams": {"selection_blend": [0.01, 40.0, 1.0, 47.0, 0.02, 0.2, 0.05]},
                "source": "RECIPES.md §2.1 (dtd.yaml INIT blend for the per-step selection)"},
        "fgvc_aircraft": {"hparams": {"selection_blend": [0.01, 1.0, 1.0, 1.0, 0.5, 0.75, 0.1]},
                          "source": "RECIPES.md §2.1 (fgvc_aircraft.yaml INIT blend for the per-step selection)"},
    }),
    # CMM has no public code (RECIPES.md §2.7): ours. It maps images into the text space like SeMoBridge, so it
    # gets SeMoBridge's views and text per dataset: the two cross-modal mappings see identical inputs.
    "cmm": {key: {**row, "hparams_source": "ours (no official CMM code, RECIPES.md §2.7): METHOD.md §4 defaults",
                  "source": "ours (no official CMM code, RECIPES.md §2.7): SeMoBridge's inputs, " + row["source"]}
            for key, row in _semobridge({}).items()},
}
