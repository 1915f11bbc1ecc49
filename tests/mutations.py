"""Mutation testing: plant known bugs in bridge/ and cache/, one at a time, and check the fast tests catch each.

    python tests/mutations.py                 # every mutation; exit 1 if one survives or its text is gone
    python tests/mutations.py -k cmm --list   # the mutations whose name contains "cmm", without running them
    python -m tests.mutations -k lambda -v    # show pytest's output of each run

Each mutation is an exact text replacement in one file. The repository is copied once to a temporary folder
(the working tree is never touched); for each mutation the file is changed there, the mutation's own test
files run with `pytest -m "not slow" -x` against that copy (`clipbridge` imported from it), and the file is
restored. A mutation is "caught" when pytest fails, "SURVIVED" when it passes. A `find` text that is no
longer in its file exactly once is a "LIST ERROR" (the code moved on: update the list), never a survivor.
Before the mutations, the unmutated copy runs all the mapped test files once: they must pass.

When you fix a bug that a test should have caught, add its mutation here (and the test that catches it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str            # category: what the bug is
    path: str            # file, relative to the repository root
    find: str            # exact text, present exactly once in the file
    replace: str
    tests: tuple[str, ...]


DEFAULTS = "tests/test_published_defaults.py"
CUPL_SETS, RULES, RECIPES = "tests/test_cupl_sets.py", "tests/test_recipe_rules.py", "tests/test_recipes.py"
LOSSES = "tests/test_training_losses.py"
FUSED = "tests/test_fused_beat_zero_shot.py"
PAPER_SEARCH = "tests/test_paper_search.py"
FEWSHOT = "tests/test_fewshot.py"
CONFORMAL, CALIBRATION = "tests/test_conformal.py", "tests/test_calibration.py"
PROBE = "tests/test_linear_probe.py"
FAMILIES = "tests/test_cache_families.py"

MUTATIONS = [
    # ------------------------------------------------------------ defaults differ from the published recipe
    Mutation("default: semobridge-t lr x10", "bridge/methods/semobridge/trained.py",
             '"lr": 1.5e-4', '"lr": 1.5e-3', (DEFAULTS,)),
    Mutation("default: semobridge-t training settings lr x10", "bridge/methods/semobridge/training.py",
             "lr: float = 1.5e-4", "lr: float = 1.5e-3", (DEFAULTS,)),
    Mutation("default: semobridge-t warm-up start lr", "bridge/methods/semobridge/training.py",
             "warmup_start_lr: float = 1e-5", "warmup_start_lr: float = 1e-4", (DEFAULTS,)),
    Mutation("default: semobridge fixed blend s 0.01 -> 0.1", "bridge/methods/semobridge/algebra.py",
             "FIXED_BLEND = (0.01,", "FIXED_BLEND = (0.1,", (DEFAULTS,)),
    Mutation("default: semobridge pinv atol 0.3 -> 0.1", "bridge/methods/semobridge/algebra.py",
             "PINV_ATOL = 0.3", "PINV_ATOL = 0.1", (DEFAULTS,)),
    Mutation("default: semobridge-t loss weight txtp 0.25 -> 0.5", "bridge/methods/semobridge/loss.py",
             '"txtp": 0.25', '"txtp": 0.5', (DEFAULTS,)),
    Mutation("default: semobridge-t stale prototypes on", "bridge/methods/semobridge/trained.py",
             '"parity_stale_prototypes": False', '"parity_stale_prototypes": True', (DEFAULTS,)),
    Mutation("zeroshot: declared as reading the support set", "bridge/methods/zeroshot.py",
             "    reads_support = False\n", "    reads_support = True\n", ("tests/test_zeroshot_support.py",)),
    Mutation("default: cmm margin 0.2 -> 0.5", "bridge/methods/cmm.py",
             '"margin": 0.2', '"margin": 0.5', (DEFAULTS, LOSSES)),
    Mutation("default: cmm steps 300 -> 100", "bridge/methods/cmm.py",
             '"steps": 300', '"steps": 100', (DEFAULTS,)),
    Mutation("default: tip-adapter-f eps 1e-4 -> 1e-8", "bridge/methods/tip_adapter_f.py",
             '"eps": 1e-4', '"eps": 1e-8', (DEFAULTS,)),
    Mutation("default: tip-adapter-f epochs 20 -> 10", "bridge/methods/tip_adapter_f.py",
             '"epochs": 20', '"epochs": 10', (DEFAULTS,)),
    Mutation("default: ape k 700/1024 -> 800/1024", "bridge/methods/ape/training_free.py",
             '"k_fraction": 700 / 1024', '"k_fraction": 800 / 1024', (DEFAULTS,)),
    Mutation("default: ape-t weight decay 0.1 -> 0.01", "bridge/methods/ape/trained.py",
             '"weight_decay": 0.1', '"weight_decay": 0.01', (DEFAULTS,)),
    Mutation("default: clip-adapter ratio 0.2 -> 0.5", "bridge/methods/clip_adapter.py",
             '"ratio": 0.2', '"ratio": 0.5', (DEFAULTS, LOSSES)),
    Mutation("default: gda alpha list of 7 -> 5", "bridge/methods/gda.py",
             '"alpha_points": 7', '"alpha_points": 5', (DEFAULTS,)),
    Mutation("default: lpclip C grid without its ends", "bridge/methods/linear_probe.py",
             '"c_grid": [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]', '"c_grid": [1e4, 1e2, 1.0, 1e-2, 1e-4]',
             (DEFAULTS,)),
    # ------------------------------------------------------------ losses: sign flips and dropped terms
    Mutation("loss: cmm triplet hinge sign flipped", "bridge/methods/cmm.py",
             "torch.relu(margin + pos - neg)", "torch.relu(margin - pos + neg)", (LOSSES,)),
    Mutation("loss: cmm triplet term dropped", "bridge/methods/cmm.py",
             '(ce + hp["triplet_weight"] * tri)', "(ce + 0 * tri)", (LOSSES,)),
    Mutation("loss: tip-adapter-f cache term sign flipped", "bridge/methods/tip_adapter_f.py",
             "+ alpha0 * cache_logits(x,", "- alpha0 * cache_logits(x,", (LOSSES,)),
    Mutation("loss: ape-t residual sign flipped on the text", "bridge/methods/ape/trained.py",
             "terms.zero_shot + logit_scale * shift", "terms.zero_shot - logit_scale * shift", (LOSSES,)),
    Mutation("loss: clip-adapter inner ReLU dropped", "bridge/methods/clip_adapter.py",
             "torch.relu(torch.relu(f @ w1) @ w2)", "torch.relu((f @ w1) @ w2)", (LOSSES,)),
    Mutation("logits: tip-adapter affinity sign flipped", "bridge/methods/tip_adapter.py",
             "(1 - affinity.unsqueeze(1))", "(1 + affinity.unsqueeze(1))", (FUSED,)),
    Mutation("logits: gda precision without the D factor", "bridge/methods/gda.py",
             "return mu, d * precision", "return mu, precision", ("tests/test_baselines.py",)),
    # ------------------------------------------------------------ the few-shot term switched off (alpha = 0)
    Mutation("alpha 0: cmm", "bridge/methods/cmm.py",
             "alpha = choice.best[:, 0]", "alpha = choice.best[:, 0] * 0", (FUSED,)),
    Mutation("alpha 0: tip-adapter", "bridge/methods/tip_adapter.py",
             "alpha, beta = choice.best[:, 0], choice.best[:, 1]",
             "alpha, beta = choice.best[:, 0] * 0, choice.best[:, 1]", (FUSED,)),
    Mutation("alpha 0: gda", "bridge/methods/gda.py",
             "alpha = choice.best[:, 0]", "alpha = choice.best[:, 0] * 0", (FUSED,)),
    Mutation("alpha 0: ape and ape-t", "bridge/methods/ape/training_free.py",
             "beta, alpha = choice.best[:, 0], choice.best[:, 1]",
             "beta, alpha = choice.best[:, 0], choice.best[:, 1] * 0", (FUSED,)),
    Mutation("alpha 0: semobridge few-shot maps (lambda2 = lambda3 = 0)", "bridge/methods/semobridge/closed_form.py",
             '"blend": result.best,', '"blend": result.best * torch.tensor([1, 1, 1, 1, 1, 0, 0], dtype=dtype),',
             (FUSED,)),
    # ------------------------------------------------------------ validation draws
    Mutation("val draw: no val split, fresh random stream", "cache/fewshot.py",
             "picked = coop_fewshot_indices(train_labels, [train_labels[i] for i in remaining], shots, seed)",
             "picked = {'train': first, 'val': coop_fewshot_indices([train_labels[i] for i in remaining], [], "
             "min(shots, MAX_VAL_SHOTS), seed)['train']}", (FEWSHOT,)),
    Mutation("val draw: val split, fresh random stream", "cache/fewshot.py",
             "val = _sample_per_class(rng, list(val_labels),",
             "val = _sample_per_class(random.Random(int(seed)), list(val_labels),", (FEWSHOT,)),
    Mutation("val draw: at most 2 shots instead of 4", "cache/fewshot.py",
             "MAX_VAL_SHOTS = 4", "MAX_VAL_SHOTS = 2", (FEWSHOT,)),
    # ------------------------------------------------------------ calibration and conformal sets (issue 22)
    Mutation("conformal: quantile rank n(1 - alpha) instead of (n + 1)(1 - alpha)", "bridge/conformal.py",
             "math.ceil((n + 1) * (1 - alpha) - 1e-9)", "math.ceil(n * (1 - alpha) - 1e-9)", (CONFORMAL,)),
    Mutation("conformal: APS counts only the classes ranked strictly above", "bridge/conformal.py",
             "at_rank = cumulative.gather(-1, last)", "at_rank = cumulative.gather(-1, last) - ordered", (CONFORMAL,)),
    Mutation("calibration: temperature search walks the wrong way", "bridge/calibration.py",
             "rising = slope > 0", "rising = slope < 0",
             (CALIBRATION,)),
    Mutation("calibration: Platt's target smoothing dropped", "bridge/calibration.py",
             "eps = (1.0 / (mask.sum(1).double() + 2))", "eps = (0.0 / (mask.sum(1).double() + 2))", (CALIBRATION,)),
    Mutation("calibration: the slope's row slices leave the last rows out", "bridge/calibration.py",
             "for r0 in range(0, n, rows):", "for r0 in range(0, n - 1, rows):", (CALIBRATION,)),
    Mutation("calibration: Brier score without the true-class term", "bridge/calibration_metrics.py",
             "((p ** 2).sum(1) - 2 * true + 1)", "((p ** 2).sum(1) + 1)", (CALIBRATION,)),
    # ------------------------------------------------------------ the linear probe
    Mutation("lambda scaling: 1/C instead of 1/(C n)", "bridge/methods/linear_probe.py",
             "solve(1.0 / (c * count))", "solve(1.0 / c)", (PROBE,)),
    Mutation("tie rule: probe grid ignores the log-probability", "bridge/methods/linear_probe.py",
             "ranking = torch.where(acc == best_acc, logp,", "ranking = torch.where(acc == best_acc, 0 * logp,",
             (PROBE,)),
    Mutation("tie rule: bisection keeps the right end on a tie", "bridge/log_bisection.py",
             "right_wins = acc_left < acc_right", "right_wins = acc_left <= acc_right", (PROBE,)),
    # ------------------------------------------------------------ other tie rules
    Mutation("tie rule: searches prefer the LOWER log-probability", "bridge/fusion.py",
             "return torch.stack([accuracy(logits, labels), mean_logp])",
             "return torch.stack([accuracy(logits, labels), -mean_logp])", ("tests/test_baselines.py",)),
    Mutation("tie rule: trained baselines keep the latest best epoch", "bridge/training.py",
             "better = acc > best_acc if", "better = acc >= best_acc if", ("tests/test_baselines_training.py",)),
    Mutation("tie rule: batched search pool ranks the secondary score backwards", "bridge/search.py",
             "order = torch.sort(-b, dim=1, stable=True).indices", "order = torch.sort(b, dim=1, stable=True).indices",
             ("tests/test_search.py",)),
    # ------------------------------------------------------------ the paper recipe's official searches and selection
    Mutation("paper search: the grid keeps the LAST maximum", "bridge/fusion.py",
             "first = accuracy.argmax(-1)", "first = accuracy.shape[-1] - 1 - accuracy.flip(-1).argmax(-1)",
             (PAPER_SEARCH,)),
    Mutation("paper search: tip-adapter's row runs the batched search", "bridge/recipes/tip_adapter.py",
             'return {"search": "grid", "alpha_low": 0.1,', 'return {"search": "batched", "alpha_low": 0.1,',
             (PAPER_SEARCH,)),
    Mutation("paper search: gda's row runs the batched search", "bridge/recipes/gda.py",
             '"hparams": {"search": "grid",', '"hparams": {"search": "batched",', (PAPER_SEARCH,)),
    Mutation("paper selection: epoch 0 is a candidate among the trained epochs", "bridge/training.py",
             'best_acc = acc.clone() if select == "with-epoch-0" else', 'best_acc = acc.clone() if select != "last" else',
             (PAPER_SEARCH,)),
    Mutation("published: tip-adapter-f's test-epoch mark dropped", "evaluate/reporting/published.py",
             'marks = TEST_EPOCH if self.method == "tip-adapter-f" else ""', 'marks = ""',
             ("tests/test_published_marks.py",)),
    # ------------------------------------------------------------ cache readers: a family read as another
    Mutation("family: format-2 flip read as plain", "cache/reader.py",
             'return _read_rows(handle[family_group(split, family)]["embedding"], positions)',
             'return _read_rows(handle[family_group(split, "plain" if family == "flip" else family)]["embedding"], '
             'positions)', (FAMILIES,)),
    Mutation("hint: the synthetic generator's command drops the families the cache has", "cache/synthetic.py",
             'merged = {**dict(settings.get("families") or {}), **families}', 'merged = dict(families)',
             ("tests/test_first_day.py",)),
    Mutation("family: format-2 crops read as another crop family", "cache/reader.py",
             'return _read_rows(handle[family_group(split, family)]["embedding"], positions)',
             'return _read_rows(handle[family_group(split, "tip" if family.startswith("semo") else family)]'
             '["embedding"], positions)', (FAMILIES,)),
    Mutation("family: format-1 flip read as plain", "cache/reader.py",
             '("flip", 1, 2)', '("flip", 0, 1)', (FAMILIES,)),
    Mutation("recipe: APE fits on SeMoBridge's CuPL sentences", "bridge/recipes/ape.py",
             "from clipbridge.bridge.recipes.common import APE_CUPL",
             "from clipbridge.bridge.recipes.common import SEMOBRIDGE_CUPL as APE_CUPL", (CUPL_SETS, RECIPES)),
    Mutation("recipe: a missing CuPL set silently dropped", "bridge/recipes/resolve.py",
             'if not spec.endswith("?") and _choice(spec, available) is None]',
             'if not spec.endswith("?") and _choice(spec, available) is None and not spec.startswith("cupl:")]',
             (CUPL_SETS,)),
    Mutation("recipe: lpclip validates on the protocol's split", "bridge/recipes/linear_probe.py",
             '"validation": "sampled",', '"validation": "protocol",', (RULES,)),
    Mutation("recipe: APE-T Food101 eps 1e-2 at every shot count", "bridge/recipes/ape_t.py",
             'for shots in (1, 2)})', 'for shots in (1, 2, 4, 8, 16)})', (RULES,)),
    Mutation("recipe: GDA's ImageNet crops as Tip's", "bridge/recipes/gda.py",
             '"families": ["gda-imagenet"]', '"families": ["tip"]', (RULES,)),
    # ------------------------------------------------------------ APE's screened hit counts (bridge/cache_screen.py)
    Mutation("screen: a suspect tying y after it beats y", "bridge/cache_suspects.py",
             "wrong = torch.where(self.before, l_s >= l_y.unsqueeze(-1), l_s > l_y.unsqueeze(-1)).any(-1)",
             "wrong = (l_s >= l_y.unsqueeze(-1)).any(-1)", ("tests/test_cache_screen.py",)),
    Mutation("screen: the moments' tail dropped from the bound", "bridge/cache_screen.py",
             "coef.append(math.exp(gamma * self.delta_max)", "coef.append(0 * math.exp(gamma * self.delta_max)",
             ("tests/test_cache_screen.py",)),
    Mutation("screen: the chord's slope without the larger end", "bridge/cache_screen.py",
             "slope = high.sub_(low).mul_(packed[:, 3])", "slope = high.sub_(high).mul_(packed[:, 3])",
             ("tests/test_cache_screen.py",)),
    Mutation("open queries: a duplicated class no longer wins its tie", "bridge/cache_suspects.py",
             "(self.twin[rows].unsqueeze(-1) & (f_s == f_y.unsqueeze(1)))",
             "(self.twin[rows].unsqueeze(-1) & (f_s != f_s))", ("tests/test_cache_screen.py",)),
    Mutation("product counts: a twin's tie taken from the batched product", "bridge/cache_suspects.py",
             "ties = self._twin_ties(rows, betas, tables) if self.any_twin else None",
             "ties = None", ("tests/test_cache_screen.py",)),
    Mutation("full products: the bounds' products left to the fit's reduced precision", "bridge/precision.py",
             '_suspended, mkldnn.fp32_precision, cuda.allow_tf32 = True, "ieee", False',
             "pass", ("tests/test_precision.py", "tests/test_cache_screen.py")),
    Mutation("open queries: α = −0.0 taken as its reciprocal −∞", "bridge/cache_suspects.py",
             "return alpha.to(torch.float64).add(0.0).reciprocal()",
             "return alpha.to(torch.float64).reciprocal()", ("tests/test_cache_screen.py",)),
    Mutation("open queries: suspects behind y win above α = 1/(B/|A|), not below it", "bridge/cache_suspects.py",
             "((ahead > -u) | (behind > u)).sum(1)", "((ahead > -u) | (behind > 1 / u)).sum(1)",
             ("tests/test_cache_screen.py",)),
    Mutation("product counts: suspects behind y win above α = 1/(B/|A|), not below it", "bridge/cache_suspects.py",
             "(behind[part] > laid[part])", "(behind[part] > 1 / laid[part])", ("tests/test_cache_screen.py",)),
    Mutation("open queries: a zero base margin taken as a unit one", "bridge/cache_suspects.py",
             "torch.full_like(margin, ZERO_MARGIN_INVERSE)", "torch.full_like(margin, 1.0)",
             ("tests/test_cache_screen.py",)),
    Mutation("top hits: wide bounds only below the reach", "bridge/cache_search.py",
             "unsure &= (unsure.cumsum(1) <= wide_batch) & (bound >= reach)",
             "unsure &= (unsure.cumsum(1) <= wide_batch) & (bound < reach)", ("tests/test_cache_screen.py",)),
    Mutation("open queries: the kept key factors of another β", "bridge/cache_suspects.py",
             "if self._witness_factors[0] != b:", "if self._witness_factors[0] is None:",
             ("tests/test_cache_screen.py",)),
    Mutation("suspects: a row's repeats kept in its place", "bridge/cache_suspects.py",
             "return torch.where(kept, packed, packed[:, :1])", "return packed",
             ("tests/test_cache_screen.py",)),
    Mutation("top hits: the wide suspects' bound lowered by one", "bridge/cache_search.py",
             "out[i, chosen] = torch.minimum(out[i, chosen], tighter[i, chosen])",
             "out[i, chosen] = torch.minimum(out[i, chosen], tighter[i, chosen] - 1)", ("tests/test_cache_screen.py",)),
    Mutation("top hits: the wide suspects made narrow", "bridge/cache_search.py",
             "per_proxy=cache_suspects.WIDE_SUSPECTS_PER_PROXY)", "per_proxy=1)", ("tests/test_cache_screen.py",)),
    Mutation("top hits: a bound equal to the floor skipped", "bridge/cache_search.py",
             "left = (~done & (out >= floor))", "left = (~done & (out > floor))", ("tests/test_cache_screen.py",)),
    Mutation("product counts: a block's leaves taken from the first block", "bridge/cache_suspects.py",
             "at = (leaf_b[chosen] - b0) * lg + leaf_g[chosen]",
             "at = (leaf_b[chosen] - b0 * 0).clamp_max(ahead.shape[0] // lg - 1) * lg + leaf_g[chosen]",
             ("tests/test_cache_screen.py",)),
    Mutation("product counts: every candidate compared at its leaf's first α", "bridge/cache_suspects.py",
             "opened[at, rank[chosen]]", "opened[at, 0]", ("tests/test_cache_screen.py",)),
    Mutation("product maxima: key factors of another query", "bridge/cache_suspects.py",
             ".permute(1, 2, 0, 3).reshape(r * t1, lb, k)", ".permute(2, 1, 0, 3).reshape(r * t1, lb, k)",
             ("tests/test_cache_screen.py",)),
    Mutation("product maxima: y's term taken from the first suspect", "bridge/cache_suspects.py",
             "a, b = self._maxima(f[:, 0], f[:, 1:], rows, ties)", "a, b = self._maxima(f[:, 1], f[:, 1:], rows, ties)",
             ("tests/test_cache_screen.py",)),
    Mutation("open counts: grids bounded leaf by leaf", "bridge/cache_suspects.py",
             "if betas.numel() * gammas.numel() * PRODUCT_FILL <= leaves.shape[0]:",
             "if betas.numel() * gammas.numel() * PRODUCT_FILL > leaves.shape[0]:", ("tests/test_cache_screen.py",)),
    Mutation("official grid: screened by size only", "bridge/methods/ape/search.py",
             "problem.screen_classes = GRID_SCREEN_CLASSES", "problem.screen_classes = None", ("tests/test_ape.py",)),
    Mutation("screen: from one class more than asked", "bridge/cache_search.py",
             "c >= self.screen_classes)", "c > self.screen_classes)", ("tests/test_ape.py",)),
    Mutation("search: bounded primary asked for the best one only", "bridge/search.py",
             "bounded(candidates, pool.size, pool.primary)", "bounded(candidates, 1, pool.primary)",
             ("tests/test_cache_screen.py",)),
    Mutation("search: the last merge keeps every elite", "bridge/search.py",
             "            pool = pool.resized(1)", "            pool = pool.resized(pool.size)", ("tests/test_search.py",)),
    # ------------------------------------------------------------ devices and precisions
    Mutation("device: search pieces side by side on a GPU", "bridge/cache_search.py",
             "workers=1 if on_gpu(self.base) else None)", "workers=None)", ("tests/test_fake_cuda.py",)),
    Mutation("inputs: only the largest value checked for NaN / Inf", "bridge/ops.py",
             "return bool(torch.isfinite(low) & torch.isfinite(high))", "return bool(torch.isfinite(high))",
             ("tests/test_ops.py",)),
    Mutation("precision: cast kernel drops the add forms' input", "bridge/precision.py",
             "result = product if beta == 0 else product.add_(base if beta == 1 else base * beta)",
             "result = product", ("tests/test_precision.py",)),
]


def copy_tree(target: Path) -> Path:
    """The repository's files (no .git, virtual environment or build output) under target/clipbridge, and
    target/shared -> ../shared when the checkout has one (tests that need it skip otherwise)."""
    ignore = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache", "*.egg-info", "build",
                                    "dist", "*.h5", "runs")
    root = target / "clipbridge"
    shutil.copytree(REPO, root, symlinks=True, ignore=ignore)
    if (REPO.parent / "shared").is_dir():
        (target / "shared").symlink_to(REPO.parent / "shared")
    return root


def run_pytest(root: Path, tests: list[str], env: dict, verbose: bool) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider",
                           *tests], cwd=root, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if verbose:
        print(output)
    return done.returncode, time.perf_counter() - start, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="pattern", default="", help="only mutations whose name contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutations and check their find texts only")
    parser.add_argument("--tests", nargs="+", help="run these test files for every mutation instead of its own")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pytest's output of every run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.pattern in m.name]
    print(f"{len(chosen)} of {len(MUTATIONS)} mutations")
    with tempfile.TemporaryDirectory(prefix="clipbridge-mutations-") as tmp:
        root = copy_tree(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        probe = "import clipbridge, os; print(os.path.realpath(clipbridge.__file__))"
        where = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if not where.stdout.strip().startswith(os.path.realpath(tmp)):
            print(f"error: clipbridge is not imported from the copy ({where.stdout.strip() or where.stderr.strip()})")
            return 2
        errors = []
        for m in chosen:
            text = (root / m.path).read_text() if (root / m.path).is_file() else None
            count = 0 if text is None else text.count(m.find)
            if count != 1:
                errors.append(m)
                why = "file is gone" if text is None else f"find text occurs {count} times (expected once)"
                print(f"LIST ERROR   {m.name}: {m.path}: {why}: {m.find!r}")
        if args.list:
            for m in chosen:
                print(f"{m.name:65s} {m.path}  ->  {', '.join(args.tests or m.tests)}")
            return 1 if errors else 0
        mapped = sorted({t for m in chosen for t in (args.tests or m.tests)})
        rc, seconds, output = run_pytest(root, mapped, env, args.verbose)
        if rc != 0:
            print(output[-3000:])
            print(f"error: the unmutated tree fails its tests ({' '.join(mapped)}); fix that first")
            return 2
        print(f"unmutated: {len(mapped)} test files pass ({seconds:.0f} s)")
        survived = []
        for m in chosen:
            if m in errors:
                continue
            path = root / m.path
            original = path.read_text()
            path.write_text(original.replace(m.find, m.replace))
            try:
                rc, seconds, output = run_pytest(root, list(args.tests or m.tests), env, args.verbose)
            finally:
                path.write_text(original)
            if rc in (0, 5):
                survived.append(m)
            verdict = "caught  " if rc not in (0, 5) else "SURVIVED"
            print(f"{verdict}     {m.name}  ({seconds:.0f} s)", flush=True)
        run = len(chosen) - len(errors)
        print(f"\n{run - len(survived)} of {run} caught, {len(survived)} survived, {len(errors)} list errors")
        for m in survived:
            print(f"  survived: {m.name} ({m.path})")
        return 1 if survived or errors else 0


if __name__ == "__main__":
    sys.exit(main())
