"""SeMoBridge (closed form) and SeMoBridge-T (trained): METHOD.md §2-3.

    algebra      the bridge, prototypes, cosine maps, class weights and blend (pure functions)
    loss         SeMoBridge-T's loss with its hand-derived gradient
    training     SeMoBridge-T's seed-batched training loop with per-step model selection
    blend_front  exact, compacted scoring of many blend candidates on the validation queries
    closed_form  the registered method "semobridge"
    trained      the registered method "semobridge-t"
"""
from clipbridge.bridge.methods.semobridge import closed_form, trained  # noqa: F401  (register them)
