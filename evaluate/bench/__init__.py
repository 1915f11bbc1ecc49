"""Many fits at once: grid (the bench over datasets x methods x shots x seeds, torchrun-aware through
distributed), sweep (a bench over one hyper-parameter's values), demo (end to end, offline), speed."""
