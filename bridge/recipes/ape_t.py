"""APE-T's recipe: APE's views, text and search scales, plus the official training per dataset (RECIPES.md
§2.3): k_train channels, the criterion's fixed [0.2, 0.8], init_alpha, lr, eps and epochs (Food101 at 1 and 2
shots: eps 1e-2, as its config's comment says)."""
from clipbridge.bridge.recipes.ape import APE_WIDTH, ape_rows

ROWS = ape_rows(lambda name, config: {
    "k_fraction": config["k_train"] / APE_WIDTH, "w0": 0.2, "w1": 0.8, "init_alpha": config["init_alpha"],
    "init_beta": 1.0, "lr": config["lr"], "eps": config["eps"], "epochs": config["epochs"]},
    common={"select": "trained-epochs"})      # the official loop: the best of epochs 1..E, first strict maximum

#: configs/food101.yaml sets eps 1e-3 with the comment that 1- and 2-shot runs use 1e-2 (RECIPES.md §2.3)
FOOD101_FEW_SHOT_EPS = 1e-2
ROWS.update({f"food101@{shots}": {"hparams": {"eps": FOOD101_FEW_SHOT_EPS},
                                   "source": "RECIPES.md §2.3 (yangyangyang127/APE configs/food101.yaml: eps 1e-2 "
                                             "for 1/2-shot)"} for shots in (1, 2)})
