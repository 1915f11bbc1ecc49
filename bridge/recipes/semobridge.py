"""SeMoBridge's recipe: its few-shot views per dataset and shot count and its text (RECIPES.md §1, §2.1);
SeMoBridge-T and CMM read the same rows (semobridge_rows)."""
from __future__ import annotations

from clipbridge.bridge.recipes.common import COOP_DATASETS, FLIP, PLAIN, R05J, R08, R08J, SEMOBRIDGE_CUPL

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
SEMOBRIDGE_TEXT = {"prompts": ["ensemble", SEMOBRIDGE_CUPL],
                   "source": "RECIPES.md §1 (SeMoBridge: clip_ensemble + its own cupl_full, one flat list; the "
                             "cache's text set cupl:semobridge)"}


def semobridge_rows(extra: dict[str, dict]) -> dict[str, dict]:
    """SeMoBridge's views and text per dataset, plus `extra` hyper-parameter rows {key: {hparams, source}}."""
    rows = {key: dict(row) for key, row in SEMOBRIDGE_VIEWS.items()}
    rows["default"].update(prompts=["ensemble", SEMOBRIDGE_CUPL + "|cupl?"],
                           prompts_source="ours: SeMoBridge's text, with CuPL sentences when the cache has them (its "
                                          "set cupl:semobridge, else the unnamed cupl; RECIPES.md §1)")
    for name in COOP_DATASETS:
        rows[name].update(prompts=SEMOBRIDGE_TEXT["prompts"], prompts_source=SEMOBRIDGE_TEXT["source"])
    for key, row in extra.items():
        rows.setdefault(key, {"source": row["source"]}).update(hparams=row["hparams"], hparams_source=row["source"])
    return rows


ROWS = semobridge_rows({})
