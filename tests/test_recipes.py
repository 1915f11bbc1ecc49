"""Paper recipes: the table says what RECIPES.md says, rows merge default <- dataset <- dataset@shots, the
uniform recipe is one shared setting, and fits follow their recipe (views, text, selection)."""
from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from clipbridge.bridge.registry import REGISTRY, check_hparams
from clipbridge.errors import ClipBridgeError
from clipbridge.bridge.recipes import recipe_families, resolve_recipe
from clipbridge.evaluate.commands.recipe import recipe as recipe_command
from clipbridge.bridge.recipes.table import RECIPES
from clipbridge.bridge.recipes.tip_adapter import TIP_CONFIGS
import clipbridge.bridge.methods  # noqa: F401  (registers every method)

COOP = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
        "sun397", "dtd", "eurosat", "ucf101")
RECIPES_MD_NAMES = {"Caltech": "caltech101", "DTD": "dtd", "EuroSAT": "eurosat", "Aircraft": "fgvc_aircraft",
                    "Food": "food101", "ImageNet": "imagenet", "Flowers": "oxford_flowers", "Pets": "oxford_pets",
                    "Cars": "stanford_cars", "SUN": "sun397", "UCF": "ucf101"}


def test_tip_adapter_rows_are_recipes_md_tip_configs(shared_dir):
    """Every row of RECIPES.md §2.2's table: search_scale [β, α], init α, Tip-Adapter-F epochs."""
    text = (shared_dir / "docs" / "RECIPES.md").read_text()
    section = text[text.index("### 2.2"):text.index("### 2.3")]
    rows = re.findall(r"^\| (\w+) \| (\d+), (\d+) \| ([\d.]+) \| [\d.e-]+ \| \**(\d+)\** \|$", section, re.M)
    assert len(rows) == 11
    for name, beta, alpha, init_alpha, epochs in rows:
        dataset = RECIPES_MD_NAMES[name]
        assert TIP_CONFIGS[dataset] == {"beta_scale": int(beta), "alpha_scale": int(alpha),
                                      "init_alpha": float(init_alpha), "epochs": int(epochs)}, name
        tipf = resolve_recipe("tip-adapter-f", dataset, 4).hparams
        assert (tipf["beta_high"], tipf["alpha_high"], tipf["init_alpha"], tipf["epochs"]) == \
            (float(beta), float(alpha), float(init_alpha), int(epochs))
        assert (tipf["grid_beta"], tipf["grid_alpha"], tipf["grid_endpoint"]) == (200, 20, False)
        assert (tipf["lr"], tipf["eps"], tipf["batch_size"], tipf["schedule"]) == (1e-3, 1e-4, 256, "cosine")


@pytest.mark.parametrize("dataset,shots,families", [
    ("caltech101", 16, ("plain",)), ("imagenet", 4, ("plain", "flip")), ("eurosat", 2, ("plain", "semo-r0.5-j")),
    ("eurosat", 4, ("plain", "flip")), ("fgvc_aircraft", 1, ("plain", "semo-r0.5-j")),
    ("oxford_flowers", 4, ("plain", "semo-r0.5-j")), ("oxford_flowers", 8, ("plain", "flip")),
    ("stanford_cars", 1, ("plain", "semo-r0.8")), ("dtd", 4, ("plain", "semo-r0.8-j")), ("dtd", 8, ("plain",)),
    ("dtd", 16, ("plain", "semo-r0.8-j:5")), ("shapes", 16, ("plain",))])
def test_semobridge_views_follow_recipes_md_per_dataset_and_shot_count(dataset, shots, families):
    for method in ("semobridge", "semobridge-t", "cmm"):
        assert resolve_recipe(method, dataset, shots).families == families


def test_semobridge_t_selection_follows_the_dataset():
    assert resolve_recipe("semobridge-t", "imagenet", 16).hparams["selection"] == "last"
    assert resolve_recipe("semobridge-t", "dtd", 2).hparams["selection_blend"] == [0.01, 40, 1, 47, 0.02, 0.2, 0.05]
    assert resolve_recipe("semobridge-t", "fgvc_aircraft", 2).hparams["selection_blend"][5:] == [0.75, 0.1]
    assert "selection" not in resolve_recipe("semobridge-t", "food101", 16).hparams
    assert "selection" not in resolve_recipe("semobridge", "imagenet", 16).hparams


def test_text_sets_follow_recipes_md():
    assert resolve_recipe("zeroshot", "dtd", 1).prompts == ("coop",)
    assert resolve_recipe("zeroshot", "imagenet", 1).prompts == ("ensemble",)     # the 7 select templates
    assert resolve_recipe("tip-adapter", "imagenet", 1).prompts == ("ensemble",)
    assert resolve_recipe("gda", "eurosat", 1).prompts == ("coop",)
    assert resolve_recipe("semobridge", "eurosat", 1).prompts == ("ensemble", "cupl:semobridge")
    assert resolve_recipe("semobridge", "shapes", 1).prompts == ("ensemble", "cupl:semobridge|cupl?")
    assert resolve_recipe("cmm", "eurosat", 1).prompts == ("ensemble", "cupl:semobridge")     # SeMoBridge's inputs
    for method in ("ape", "ape-t"):                          # APE's own CuPL generation, not SeMoBridge's
        assert resolve_recipe(method, "eurosat", 1).prompts == ("coop", "cupl:ape")
        assert resolve_recipe(method, "imagenet", 1).prompts == ("ensemble", "cupl:ape")
        assert resolve_recipe(method, "shapes", 1).prompts == ("coop", "cupl:ape|cupl?")


def test_every_recipe_row_is_valid_for_its_method():
    for method, rows in RECIPES.items():
        for dataset in (*COOP, "shapes"):
            for shots in (1, 2, 4, 8, 16):
                resolved = resolve_recipe(method, dataset, shots)
                check_hparams(REGISTRY[method], resolved.hparams)
                assert resolved.families and all(resolved.sources.get(k) for k in ("families", "prompts"))


def test_uniform_recipe_is_one_shared_setting_with_default_hyper_parameters():
    uniform = resolve_recipe("tip-adapter", "fgvc_aircraft", 16, recipe="uniform")
    assert uniform.families == ("plain",) and uniform.hparams == {} and uniform.prompts == ()
    assert uniform.prompt_sets(["coop", "ensemble"]) == ["coop", "ensemble"]
    chosen = resolve_recipe("gda", "dtd", 1, recipe="uniform", families=["plain", "flip"], prompts=["coop"])
    assert chosen.families == ("plain", "flip") and chosen.prompt_sets(["coop", "ensemble"]) == ["coop"]
    replaced = resolve_recipe("gda", "dtd", 1, prompts=["ensemble"])           # the paper recipe, other text
    assert replaced.prompts == ("ensemble",) and replaced.families == ("tip",) and replaced.hparams
    assert replaced.sources["prompts"].startswith("given explicitly")


def test_a_required_text_set_the_cache_lacks_is_one_line_naming_how_to_add_it():
    paper = resolve_recipe("semobridge", "dtd", 1)
    with pytest.raises(ClipBridgeError) as info:
        paper.prompt_sets(["coop", "ensemble"])
    assert "\n" not in str(info.value)
    assert "uses text set(s) cupl:semobridge (cupl:semobridge = SeMoBridge's TEXTS/<dataset>/cupl_full.json" in str(info.value)
    assert "add with: extract --prompts cupl:semobridge --cupl semobridge=FILE on the same cache" in str(info.value)
    assert resolve_recipe("semobridge", "shapes", 1).prompt_sets(["coop", "ensemble"]) == ["ensemble"]
    # outside the 11 datasets: the method's own named set, else the cache's one unnamed CuPL set
    shapes = resolve_recipe("ape", "shapes", 1)
    assert shapes.prompt_sets(["coop", "cupl", "cupl:semobridge"]) == ["coop", "cupl"]
    assert shapes.prompt_sets(["coop", "cupl", "cupl:ape"]) == ["coop", "cupl:ape"]
    with pytest.raises(ClipBridgeError, match=r"or --prompts coop,cupl \(the cache's unnamed CuPL set instead\)"):
        resolve_recipe("ape", "dtd", 1).prompt_sets(["coop", "cupl"])       # a cache from before named sets


def test_recipe_families_are_what_extract_encodes_for_a_dataset():
    assert recipe_families("dtd", [1, 16], methods=["semobridge", "tip-adapter"]) == ["plain", "semo-r0.5-j",
                                                                                    "semo-r0.8-j", "tip"]
    assert set(recipe_families("food101", [1, 2, 4, 8, 16])) == {"plain", "tip", "coop-rrc"}   # coop-rrc: CLIP-Adapter
    assert set(recipe_families("food101", [16], methods=["ape", "ape-t"])) == {"tip"}


def test_ape_rows_carry_the_official_config_with_k_as_a_fraction_of_the_width():
    free = resolve_recipe("ape", "eurosat", 16).hparams
    assert (free["beta_scale"], free["alpha_scale"], free["gamma_scale"]) == (30.0, 5.0, 1.5)
    assert free["k_fraction"] == 700 / 1024 and (free["w0"], free["w1"]) == (0.9, 0.1)
    trained = resolve_recipe("ape-t", "eurosat", 16).hparams
    assert trained["k_fraction"] == 900 / 1024 and trained["epochs"] == 200 and (trained["w0"], trained["w1"]) == (0.2, 0.8)
    assert resolve_recipe("ape", "imagenet", 4).hparams["gamma_steps"] == 5
    assert resolve_recipe("ape", "imagenet", 4).prompts == ("ensemble", "cupl:ape")


class StepCounter:
    """A bridge.progress listener that sums the optimisation steps a fit reports."""

    steps = 0

    def begin(self, total, unit):
        pass

    def advance(self, steps, best):
        self.steps += steps

    def end(self):
        pass


@pytest.mark.parametrize("classes, shots, steps_per_epoch", [(10, 16, 1), (20, 16, 2), (100, 4, 2), (101, 16, 7)])
def test_tip_adapter_f_recipe_takes_epochs_times_ceil_shots_over_256_steps(classes, shots, steps_per_epoch):
    from synthetic_tasks import make_task

    from clipbridge.bridge.progress import listening

    hparams = resolve_recipe("tip-adapter-f", "eurosat", shots).hparams
    assert hparams["train_views"] == "cycle" and hparams["batch_size"] == 256 and hparams["epochs"] == 100
    # support size C·K; V = 3 cached views per shot: an epoch is still one view of each of the C·K images
    task = make_task(seeds=(1,), classes=classes, shots=shots, views=3, dim=8, width=8, val_per_class=1,
                     test_per_class=1)[0]
    counter = StepCounter()
    with listening(counter):
        REGISTRY["tip-adapter-f"].fit(task, **{**hparams, "epochs": 3, "grid_beta": 4, "grid_alpha": 4})
    assert counter.steps == 3 * steps_per_epoch == 3 * -(-classes * shots // 256)


def test_recipe_command_prints_the_resolved_recipe_with_sources():
    result = CliRunner().invoke(recipe_command, ["--method", "tip-adapter", "--dataset", "oxford_flowers", "--shots",
                                                 "4"])
    assert result.exit_code == 0, result.output
    assert "view families  tip" in result.output and "* beta_high = 50.0" in result.output
    assert "gaopengcuhk/Tip-Adapter configs/oxford_flowers.yaml" in result.output
    as_json = json.loads(CliRunner().invoke(recipe_command, ["--method", "semobridge-t", "--dataset", "imagenet",
                                                             "--shots", "16", "--json"]).output)
    assert as_json["resolved_hparams"]["selection"] == "last" and as_json["view_families"] == ["plain", "flip"]


def test_gda_on_the_tip_family_differs_from_zero_shot_at_one_shot():
    """One plain view per class makes GDA's covariance 0 (= zero-shot); its paper's 10 augmented views do not."""
    from synthetic_tasks import make_task

    task, test_x, _ = make_task(seeds=(1, 2), classes=6, shots=1, views=10)
    gda = REGISTRY["gda"]
    state = gda.fit(task, **resolve_recipe("gda", "dtd", 1).hparams)
    zero = REGISTRY["zeroshot"].logits(REGISTRY["zeroshot"].fit(task), test_x)
    assert not torch.allclose(gda.logits(state, test_x), zero)
    assert float(state.tensors["weight"].abs().max()) > 0


def test_imagenet_under_protocol_paper_keeps_the_last_semobridge_t_step(tmp_path):
    from clipbridge.cache.reader import open_cache
    from clipbridge.cache.synthetic import write_synthetic_cache
    from clipbridge.evaluate.fitting.plan import plan_fit
    from clipbridge.evaluate.fitting.scoring import fit_method
    from clipbridge.evaluate.fitting.tasks import build_fit_task

    path = write_synthetic_cache(tmp_path / "imagenet.h5", classes=5, train_per_class=4, dim=16, width=12, val=10,
                                 test=20, families={"flip": 1}, dataset="imagenet")
    cache = open_cache(path)
    plan = plan_fit(cache, "semobridge-t", 2, recipe="paper", prompts=["ensemble"],     # no cupl:semobridge here
                    overrides={"steps": 30, "warmup": 5})
    assert plan.hparams["selection"] == "last" and plan.families == ("plain", "flip")
    task, meta = build_fit_task(cache, shots=2, seeds=[1, 2], families=plan.families, prompt_sets=["ensemble"],
                                protocol="paper")
    state = fit_method("semobridge-t", task, plan.hparams)
    assert state.info["selected_step"] == [30, 30] and state.info["selection_val_accuracy"] == [None, None]


def test_the_registry_and_the_recipe_table_list_the_same_methods():
    """One list of methods: every registered method has recipe rows and every recipe belongs to a method; the
    recipe table's order is the display order clipbridge.METHODS gives users."""
    import clipbridge
    from clipbridge.bridge.recipes import METHOD_NAMES, order_methods

    assert set(REGISTRY) == set(RECIPES) == set(METHOD_NAMES)
    assert clipbridge.METHODS == METHOD_NAMES == tuple(RECIPES)
    assert order_methods(REGISTRY) == list(METHOD_NAMES)
