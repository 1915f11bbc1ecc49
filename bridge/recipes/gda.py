"""GDA's recipe: Tip-Adapter's 10 crop + flip views kept separately (ImageNet: its own loader's crops of scale
0.08-1, view family gda-imagenet), the CoOp template, alpha in 1e-4..100."""
from clipbridge.bridge.recipes.common import COOP_TEXT

ROWS = {
    "default": {"families": ["tip"], "prompts": ["coop"],
                "hparams": {"search": "grid", "alpha_low": 1e-4, "alpha_high": 100.0, "alpha_points": 7},
                "source": "RECIPES.md §2.4 (mrflogs/ICLR24: 10 crop+flip views kept separately, alpha from the "
                          "7 powers of ten 1e-4..100 only, first strict maximum); " + COOP_TEXT},
    "imagenet": {"prompts": ["ensemble"], "families": ["gda-imagenet"], "source": COOP_TEXT,
                 "families_source": "RECIPES.md §2.4 (mrflogs/ICLR24 datasets/imagenet.py: RandomResizedCrop scale "
                                    "(0.08, 1), bicubic, + flip, 10 passes)"},
}
