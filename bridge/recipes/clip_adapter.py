"""CLIP-Adapter's recipe: SeMoBridge's CLIP-Adapter config (the training values are the method's defaults)."""
ROWS = {
    "default": {"families": ["coop-rrc"], "prompts": ["coop"],
                "source": "RECIPES.md §2.5 (SeMoBridge's CLIP-Adapter vit_b16 config: Dassl random resized crop "
                          "0.08-1 + flip, CoOp template; SGD lr 0.002, batch 32, 200 epochs, 1 warm-up epoch, "
                          "cosine = bridge/methods/clip_adapter.py defaults)"},
}
