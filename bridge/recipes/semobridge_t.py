"""SeMoBridge-T's recipe: SeMoBridge's views and text, plus the per-step selection of the official configs."""
from clipbridge.bridge.recipes.semobridge import semobridge_rows

ROWS = semobridge_rows({
    "imagenet": {"hparams": {"selection": "last"},
                 "source": "RECIPES.md §2.1 (imagenet.yaml FINAL_MODEL last_step)"},
    "dtd": {"hparams": {"selection_blend": [0.01, 40.0, 1.0, 47.0, 0.02, 0.2, 0.05]},
            "source": "RECIPES.md §2.1 (dtd.yaml INIT blend for the per-step selection)"},
    "fgvc_aircraft": {"hparams": {"selection_blend": [0.01, 1.0, 1.0, 1.0, 0.5, 0.75, 0.1]},
                      "source": "RECIPES.md §2.1 (fgvc_aircraft.yaml INIT blend for the per-step selection)"},
})
