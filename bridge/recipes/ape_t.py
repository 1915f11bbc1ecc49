"""APE-T's recipe: APE's views, text and search scales, plus the official training per dataset (RECIPES.md
§2.3): k_train channels, the criterion's fixed [0.2, 0.8], init_alpha, lr, eps and epochs."""
from clipbridge.bridge.recipes.ape import APE_WIDTH, ape_rows

ROWS = ape_rows(lambda name, config: {
    "k_fraction": config["k_train"] / APE_WIDTH, "w0": 0.2, "w1": 0.8, "init_alpha": config["init_alpha"],
    "init_beta": 1.0, "lr": config["lr"], "eps": config["eps"], "epochs": config["epochs"]},
    common={"select": "trained-epochs"})      # the official loop: the best of epochs 1..E, first strict maximum
