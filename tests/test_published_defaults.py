"""Every method's defaults, pinned to LITERAL values with their source (never read back from the code under
test), and the training settings each fit actually hands to its optimiser.

Sources: RECIPES.md = ../shared/docs/RECIPES.md (the authors' code), METHOD.md = ../shared/docs/METHOD.md
(the method contract). "median" = the median of the 11 official per-dataset configs listed in RECIPES.md; "ours"
= a project choice stated in the method's docstring (a deliberate change must update this table too).
"""
from __future__ import annotations

import pytest

import clipbridge.bridge.methods  # noqa: F401  (registers every method)
from clipbridge.bridge.registry import REGISTRY
from synthetic_tasks import make_task

PUBLISHED = {
    "semobridge-t": {
        "steps": 5000,                    # RECIPES.md §2.1 SeMoBridge-T schedule (vit_b16.yaml:26-42): 5000 steps
        "warmup": 500,                    # RECIPES.md §2.1: linear warm-up 500 steps
        "lr": 1.5e-4,                     # RECIPES.md §2.1: AdamW lr 1.5e-4
        "weight_decay": 0.01,             # RECIPES.md §2.1: wd 0.01
        "csb": True,                      # RECIPES.md §2.1: CSB on
        "selection": "best-val",          # RECIPES.md §2.1: FINAL_MODEL best_val (ImageNet last_step, via recipe)
        "selection_blend": [0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5],   # RECIPES.md §2.1 fixed blend, default row
        "parity_stale_prototypes": False,  # METHOD.md §3: the default must recompute P from the chosen step
    },
    "cmm": {                              # METHOD.md §4 (the paper's values were not available: our stated defaults)
        "steps": 300, "lr": 1e-3, "margin": 0.2, "triplet_weight": 1.0, "train_alpha": 1.0,
        "alpha_low": 0.0, "alpha_high": 5.0,
        "weight_decay": 0.01,             # METHOD.md §4 "full-batch AdamW": torch's AdamW default weight decay
    },
    "tip-adapter-f": {
        "epochs": 20,                     # RECIPES.md §2.2 train_epoch 20 (all but EuroSAT); METHOD.md §5
        "lr": 1e-3,                       # RECIPES.md §2.2 / METHOD.md §5: AdamW lr 1e-3
        "eps": 1e-4,                      # RECIPES.md §2.2: eps 1e-4
        "weight_decay": 0.01,             # RECIPES.md §2.2: torch default wd 0.01
        "schedule": "cosine",             # RECIPES.md §2.2: cosine annealing, stepped per iteration
        "init_beta": 1.0,                 # RECIPES.md §2.2: init_beta 1
        "select": "with-epoch-0",         # ours (uniform recipe): the epoch on validation (never test, METHOD.md
                                          # §5), epoch 0 a candidate; the paper recipe: epochs 1..E only
    },
    "ape": {
        "k_fraction": 700 / 1024,         # RECIPES.md §2.3 "k free" median 700 (of RN50's 1024)
        "w0": 0.5, "w1": 0.5,             # RECIPES.md §2.3 w_free median (0.5, 0.5)
        "beta_scale": 7.0, "alpha_scale": 7.0, "gamma_scale": 1.0,   # RECIPES.md §2.3 scale median (7, 7, 1)
        "beta_steps": 200, "alpha_steps": 20, "gamma_steps": 20,     # RECIPES.md §2.3 steps [200, 20, 20]
    },
    "ape-t": {
        "k_fraction": 800 / 1024,         # RECIPES.md §2.3 "k train" median 800
        "w0": 0.2, "w1": 0.8,             # RECIPES.md §2.3 w_training [0.2, 0.8]
        "epochs": 30, "lr": 1e-3, "eps": 1e-3,   # RECIPES.md §2.3 APE-T lr / eps / epochs medians
        "weight_decay": 0.1,              # RECIPES.md §2.3: AdamW wd 0.1
        "batch_size": 256,                # RECIPES.md §2.3: batch 256
        "init_alpha": 2.0, "init_beta": 1.0,      # RECIPES.md §2.3: init α median 2, init β 1
        "beta_scale": 7.0, "alpha_scale": 7.0, "beta_steps": 200, "alpha_steps": 20,
    },
    "gda": {
        "alpha_low": 1e-4, "alpha_high": 100.0, "alpha_points": 7,   # RECIPES.md §2.4: {1e-4, ..., 100}
    },
    "clip-adapter": {
        "reduction": 4, "ratio": 0.2,     # RECIPES.md §2.5: Linear(D -> D/4), x = 0.2·A(f) + 0.8·f
        "epochs": 200, "lr": 0.002, "batch_size": 32,   # RECIPES.md §2.5: CoOp vit_b16 config
        "warmup_epochs": 1, "warmup_lr": 1e-5,           # RECIPES.md §2.5: 1 warm-up epoch at constant 1e-5
        "momentum": 0.9, "weight_decay": 5e-4,           # Dassl's OPTIM defaults (clip_adapter.py docstring)
    },
    "linear-probe": {
        "c_grid": [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6],   # RECIPES.md §2.6 C grid
        "bisection_steps": 8,             # RECIPES.md §2.6: 8 steps
        "max_iter": 1000,                 # RECIPES.md §2.6: max_iter 1000
        "tol": 1e-4,                      # sklearn LogisticRegression's default tol (RECIPES.md §2.6 uses it)
    },
    "tip-adapter": {                      # ours: the uniform recipe's box (the paper recipe sets RECIPES.md §2.2's)
        "alpha_low": 0.0, "alpha_high": 10.0, "beta_low": 0.0, "beta_high": 10.0,
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_defaults_are_the_published_values(name):
    defaults = REGISTRY[name].defaults
    for key, value in PUBLISHED[name].items():
        assert key in defaults, f"{name} has no hyper-parameter {key!r}"
        got = defaults[key]
        assert type(got) is type(value) or isinstance(value, float) and isinstance(got, (int, float)), (name, key)
        same = got == value if isinstance(value, (str, bool)) else list(map(float, _flat(got))) == pytest.approx(
            list(map(float, _flat(value))), rel=1e-12, abs=0)
        assert same, f"{name}.{key} = {got!r}, published {value!r}"


def _flat(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def test_semobridge_constants_are_the_published_ones():
    from clipbridge.bridge.methods.semobridge import algebra as sm
    from clipbridge.bridge.methods.semobridge import loss as sl
    from clipbridge.bridge.methods.semobridge.training import TrainSettings, learning_rate

    assert tuple(sm.FIXED_BLEND) == (0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)      # RECIPES.md §2.1 fixed blend
    assert sm.PINV_ATOL == 0.3                                                 # METHOD.md §2: pinv(Wt, atol=0.3)
    assert tuple(sm.BLEND_LOW) == (0.0,) * 7                                   # METHOD.md §2 blend search box
    assert tuple(sm.BLEND_HIGH) == (1.5, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0)
    assert sl.LOSS_WEIGHTS == {"img": 0.5, "txtp": 0.25, "txte": 0.25, "cons": 0.1, "bias": 0.1}  # METHOD.md §3
    s = TrainSettings()                                                        # RECIPES.md §2.1 schedule
    assert (s.steps, s.warmup, s.lr, s.weight_decay, s.csb) == (5000, 500, 1.5e-4, 0.01, True)
    assert tuple(s.selection_blend) == (0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)
    assert learning_rate(0, s) == 1e-5                                         # Dassl WARMUP_MIN_LR at step 0
    assert learning_rate(250, s) == pytest.approx(1.5e-4 * 250 / 500, rel=1e-12)
    assert learning_rate(500, s) == learning_rate(4999, s) == 1.5e-4


def test_semobridge_t_fit_trains_with_the_published_settings(monkeypatch):
    """What the fit hands to its training loop, with no hyper-parameter given."""
    from clipbridge.bridge.methods.semobridge import trained

    seen = {}

    def spy(views, text, wt, initial, logit_scale, settings, *args, **kwargs):
        seen["settings"], seen["logit_scale"] = settings, logit_scale
        raise _Stop

    monkeypatch.setattr(trained, "train_bridge", spy)
    task, _, _ = make_task(seeds=(1,), logit_scale=100.0)
    with pytest.raises(_Stop):
        REGISTRY["semobridge-t"].fit(task)
    s = seen["settings"]
    assert (s.steps, s.warmup, s.lr, s.weight_decay, s.csb, s.selection) == (5000, 500, 1.5e-4, 0.01, True,
                                                                              "best-val")
    assert tuple(s.selection_blend) == (0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5) and s.warmup_start_lr == 1e-5
    assert seen["logit_scale"] == 100.0                                        # τ of img's CE (METHOD.md §3)


class _Stop(Exception):
    """Raised by a spy once it has seen what it wanted (the fit stops there)."""


# What each trained baseline passes to bridge.training.train_and_select with its defaults (the published
# optimiser settings above must reach the optimiser, not only the defaults table).
TRAINING = {
    "cmm": ("bridge.methods.cmm", {"steps": 300, "lr": 1e-3, "weight_decay": 0.01, "optimizer": None}),
    "tip-adapter-f": ("bridge.methods.tip_adapter_f", {"lr": 1e-3, "weight_decay": 0.01, "eps": 1e-4,
                                                       "schedule": "cosine", "optimizer": None}),
    "ape-t": ("bridge.methods.ape.trained", {"lr": 1e-3, "weight_decay": 0.1, "eps": 1e-3, "schedule": "cosine",
                                             "optimizer": None}),
    "clip-adapter": ("bridge.methods.clip_adapter", {"lr": 0.002, "weight_decay": 5e-4, "optimizer": "sgd",
                                                     "momentum": 0.9}),
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_trained_baselines_pass_the_published_optimiser_settings(name, monkeypatch):
    import importlib

    module_name, expected = TRAINING[name]
    module = importlib.import_module(f"clipbridge.{module_name}")
    seen = {}

    def spy(init, loss, val_accuracy, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(module, "train_and_select", spy)
    task, _, _ = make_task(seeds=(1,), shots=2)
    with pytest.raises(_Stop):
        REGISTRY[name].fit(task)
    for key, value in expected.items():
        if value is None:                    # AdamW: the loop's default optimiser
            assert seen.get(key, "adamw") == "adamw", (name, key, seen.get(key))
        else:
            assert seen[key] == value, (name, key, seen[key])
