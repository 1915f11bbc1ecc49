"""The linear probe's recipe: CoOp's lpclip protocol."""
from clipbridge.bridge.recipes.common import PLAIN

ROWS = {
    "default": {"families": PLAIN, "prompts": ["coop"], "hparams": {"features": "raw", "search": "lpclip"},
                "source": "RECIPES.md §2.6 (CoOp lpclip: raw features of the test transform, no augmentation; "
                          "L2 logistic regression to convergence, the C grid then 8 log-bisection steps)"},
}
