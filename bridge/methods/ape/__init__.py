"""APE (training-free) and APE-T (trained): RECIPES.md §2.3, Zhu et al., "Not All Features Matter:
Enhancing Few-shot CLIP with Adaptive Prior Refinement", ICCV 2023.

    channels       the channel criterion and the choice of k kept channels (k for any width D)
    cache          the cache model both share: per-key divergence and the logits
    search         (β, α, γ) on validation: the official grid (exact) or the project's batched search
    training_free  the registered method "ape"
    trained        the registered method "ape-t"
    parity         recompute of the golden APE fixtures (python -m clipbridge.bridge.parity)
    speed          fit time of APE (batched search, official grid) against Tip-Adapter's (a benchmark script)
"""
from clipbridge.bridge.methods.ape import trained, training_free  # noqa: F401  (register ape-t, ape)
