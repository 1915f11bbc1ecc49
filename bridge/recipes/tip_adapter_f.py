"""Tip-Adapter-F's recipe: Tip-Adapter's views, text and search box, plus the official training per dataset
(init_alpha, epochs of RECIPES.md §2.2; lr, eps, batch and schedule of the official main.py)."""
from clipbridge.bridge.recipes.tip_adapter import TIP_F_TRAINING, tip_rows, tip_search

ROWS = tip_rows(lambda config: {**tip_search(config), "epochs": config["epochs"],
                                "init_alpha": config["init_alpha"], **TIP_F_TRAINING})
