"""The linear probe's recipe: CoOp's lpclip protocol, its min(K, 4) validation images per class included (kept
under --protocol paper too: lpclip never validates on the whole val split)."""
from clipbridge.bridge.recipes.common import PLAIN

ROWS = {
    "default": {"families": PLAIN, "prompts": ["coop"], "hparams": {"features": "raw", "search": "lpclip"},
                "validation": "sampled",
                "validation_source": "RECIPES.md §2.6 (lpclip/linear_probe.py: {1:1, 2:2, 4:4, 8:4, 16:4} val "
                                     "images per class = min(K, 4), whatever the protocol)",
                "source": "RECIPES.md §2.6 (CoOp lpclip: raw features of the test transform, no augmentation; "
                          "L2 logistic regression to convergence, the C grid then 8 log-bisection steps)"},
}
