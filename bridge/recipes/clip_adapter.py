"""CLIP-Adapter's recipe: SeMoBridge's CLIP-Adapter config (the training values are the method's defaults;
selection as Dassl's TEST.FINAL_MODEL: best_val = the best of epochs 1..E, ImageNet last_step)."""
ROWS = {
    "default": {"families": ["coop-rrc"], "prompts": ["coop"],
                "source": "RECIPES.md §2.5 (SeMoBridge's CLIP-Adapter vit_b16 config: Dassl random resized crop "
                          "0.08-1 + flip, CoOp template; SGD lr 0.002, batch 32, 200 epochs, 1 warm-up epoch, "
                          "cosine = bridge/methods/clip_adapter.py defaults)",
                "hparams": {"select": "trained-epochs"},
                "hparams_source": "RECIPES.md §2.5 (Dassl TEST.FINAL_MODEL best_val: validated after every epoch, "
                                  "first strict maximum of epochs 1..E)"},
    "imagenet": {"hparams": {"select": "last"},
                 "source": "SeMoBridge's imagenet config (TEST.FINAL_MODEL last_step; RECIPES.md §2.1)"},
}
