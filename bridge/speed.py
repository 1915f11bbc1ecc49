"""Speed benchmarks of the SeMoBridge core on synthetic tensors (prints figures; no assertions).

    python -m clipbridge.bridge.speed search [--trials 1000] [--sizes 101x16x404 101x16x2000] [--seeds 1 2] [--threads N]
        blend search: ours (bridge.search.batched_search via the "semobridge" method's defaults) against
        sequential Optuna-TPE trials over the same 7 ranges, on the same validation maps.
    python -m clipbridge.bridge.speed train [--steps 5000] [--baseline-steps 200] [--batch-seeds 10] [--batch-steps 50] [--threads N]
                                            [--floor-classes 101 1000] [--floor-steps 20] [--floor-repeats 3] [--no-bf16]
        first, per class count: a step (fp32, and with bf16 products) against its matmul floor, the time of
        the step's matrix products alone (step_products);
        SeMoBridge-T training with per-step best-validation selection: ours (bridge.methods.semobridge.training)
        against the paper's procedure written plainly (autograd through every bridged view, then a full
        re-evaluation of the fixed blend with fresh S1, S2, S3 each step); then S seeds batched vs one.

    python -m clipbridge.bridge.speed affine [--classes 101] [--shots 16] [--dim 512] [--val 2000] [--steps 200]
                                             [--repeats 3]
        SeMoBridge (fit) and SeMoBridge-T (ms per training step) on a linear text projection against the same
        task with an affine one (t = e Wt + b, SigLIP): the cost of the homogeneous coordinates.

The baseline's per-step cost is constant, so it runs `--baseline-steps` steps and its 5000-step time is
extrapolated (stated in the output); ours is also run for those steps and must select the same step and
reach the same bridge (printed). Optuna is imported only here (pip extra "bench").
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.methods.semobridge.closed_form import BLEND_GRID, SEARCH_DEFAULTS, SEARCH_FINAL_RADIUS
from clipbridge.bridge.ops import accuracy
from clipbridge.bridge.search import batched_search
from clipbridge.bridge.methods.semobridge.blend_front import front_scores, validation_front
from clipbridge.bridge.methods.semobridge.training import TrainSettings, learning_rate, train_bridge
from clipbridge.bridge.task import FewShotTask
from clipbridge.bridge.text import ClassText, class_text

MIN_FLOOR_STEPS = 5      # a step timed as (T(n) − T(1)) / (n − 1): at least 4 steps' difference, even at 1,000 classes

# ------------------------------------------------------------------------------------------ synthetic task
def synthetic_task(*, classes: int, shots: int, dim: int = 512, width: int = 512, val: int, seeds=(1,),
                   prompts: int = 4, shared_val: bool = True, seed: int = 0, dtype=torch.float32) -> FewShotTask:
    """A FewShotTask of random-but-structured tensors: class directions + noise + a modality gap, text
    that only roughly knows the classes, a Wt with a spread of singular values (some below 0.3)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    mu = n(r(classes, dim))
    img_gap, txt_gap = 0.6 * n(r(dim)), 0.6 * n(r(dim))

    def images(labels: Tensor) -> Tensor:
        return 10.0 * (mu[labels] + 4.5 * r(*labels.shape, dim) / dim ** 0.5 + img_gap)

    s = len(seeds)
    support = images(torch.arange(classes).repeat_interleave(shots).expand(s, -1)).reshape(s, classes, shots, dim)
    u, _, vh = torch.linalg.svd(r(width, dim), full_matrices=False)
    wt = u @ torch.diag(torch.linspace(0.1, 3.0, min(width, dim))) @ vh
    text_class = torch.arange(classes).repeat_interleave(prompts)
    mu_text = n(mu + 1.2 * r(classes, dim) / dim ** 0.5)
    eos = (n(mu_text[text_class] + 0.3 * r(classes * prompts, dim) / dim ** 0.5) + txt_gap) @ torch.linalg.pinv(wt)
    eos = eos + 0.05 * r(classes * prompts, width)
    sv = 1 if shared_val else s
    val_y = torch.randint(0, classes, (sv, val), generator=g)
    return FewShotTask(support=support.to(dtype), support_mask=torch.ones(classes, shots, dtype=torch.bool),
                       text_projected=(eos @ wt).to(dtype), text_eos=eos.to(dtype), text_class=text_class,
                       text_projection=wt.to(dtype), logit_scale=100.0, val=images(val_y).to(dtype),
                       val_labels=val_y, views=1, seeds=tuple(seeds))


# ------------------------------------------------------------------------------------------------ search
def _val_problem(task: FewShotTask):
    text = class_text(task)
    views = sm.weighted_views(task.support, task.support_mask)
    wt = task.text_projection
    b0 = sm.initial_bridge(wt)
    f_bar = sm.image_prototypes(views, task.num_classes)
    protos = sm.bridged_prototypes(views, task.num_classes, b0, wt)
    s = task.num_seeds
    maps = sm.cosine_maps(task.val.expand(s, -1, -1), text.projected, f_bar, protos, b0, wt)
    return maps, sm.divergence(f_bar, text.projected), task.val_labels.expand(s, -1)


def optuna_search(maps: sm.Maps, div: Tensor, labels: Tensor, trials: int, seed: int) -> tuple[float, float]:
    """The paper's search: `trials` sequential TPE trials, each scoring one blend. -> (best acc, seconds)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = sm.BLEND_PARAMS

    def objective(trial) -> float:
        row = [trial.suggest_float(k, lo, hi) for k, lo, hi in zip(names, sm.BLEND_LOW, sm.BLEND_HIGH)]
        params = torch.tensor(row, dtype=maps.s1.dtype).view(1, 1, 7)
        return float(accuracy(sm.blend_logits(maps, div, params)[:, 0], labels)[0])

    start = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return study.best_value, time.perf_counter() - start


def ours_search(maps: sm.Maps, div: Tensor, labels: Tensor, seed: int, rounds: int, per_round: int):
    start = time.perf_counter()
    low = torch.tensor(sm.BLEND_LOW, dtype=maps.s1.dtype)
    high = torch.tensor(sm.BLEND_HIGH, dtype=maps.s1.dtype)
    front = validation_front(maps, div, labels)
    res = batched_search(lambda c: front_scores(front, c), low, high, num_seeds=1, rounds=rounds,
                         per_round=per_round, seed=seed, grid=torch.tensor(BLEND_GRID, dtype=maps.s1.dtype),
                         final_radius=SEARCH_FINAL_RADIUS)
    return float(res.best_score[0]), time.perf_counter() - start, round(front.scored_share * maps.s1.shape[-1], 1)


def bench_search(args) -> None:
    rounds, per_round = args.rounds, args.per_round
    print(f"blend search: ours = {rounds} rounds x {per_round} candidates (+{len(BLEND_GRID)} grid) vs "
          f"Optuna-TPE {args.trials} sequential trials; torch threads {torch.get_num_threads()}")
    print(f"{'task':>16} {'seed':>4} | {'ours acc':>8} {'ours s':>7} | {'tpe acc':>8} {'tpe s':>7} | speed-up")
    for size in args.sizes:
        c, k, nv = (int(x) for x in size.split("x"))
        for seed in args.seeds:
            task = synthetic_task(classes=c, shots=k, val=nv, seed=seed)
            maps, div, labels = _val_problem(task)
            acc, secs, kept = ours_search(maps, div, labels, seed, rounds, per_round)
            t_acc, t_secs = optuna_search(maps, div, labels, args.trials, seed)
            print(f"{size:>16} {seed:>4} | {acc:8.2f} {secs:7.2f} | {t_acc:8.2f} {t_secs:7.2f} | "
                  f"{t_secs / secs:6.1f}x  {'ours >= tpe' if acc >= t_acc else 'TPE BETTER'}  (front {kept}/{c} classes)",
                  flush=True)


# ------------------------------------------------------------------------------------------------- train
def paper_training(views: sm.WeightedViews, text: ClassText, wt: Tensor, val: Tensor, val_labels: Tensor,
                   settings: TrainSettings, logit_scale: float = 100.0) -> tuple[Tensor, int, Tensor]:
    """The paper's procedure written plainly (one seed, no fast paths): autograd through x̂ of every view,
    AdamW, then validation from scratch (bridged prototypes, S1, S2, S3, w, blend) after every step.
    Returns (selected bridge [D, W], selected step, best accuracy)."""
    c = text.projected.shape[0]
    support = views.raw[0].reshape(c, -1, views.raw.shape[-1])                           # [C, K', D]
    y = views.labels
    ell = text.eos_length
    bridge = sm.initial_bridge(wt).clone().requires_grad_(True)
    bias = torch.zeros(c, wt.shape[0], dtype=wt.dtype, requires_grad=True)
    opt = torch.optim.AdamW([bridge, bias], lr=settings.lr, weight_decay=settings.weight_decay)
    ce = torch.nn.functional.cross_entropy
    n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    best_acc, best_step, best = -1.0, 0, bridge.detach().clone()
    fixed = torch.tensor(sm.FIXED_BLEND, dtype=wt.dtype).view(1, 1, 7)
    for step in range(settings.steps):
        xh, eh = sm.bridge_views(support, bridge, ell, wt, bias[:, None])
        protos, uprot = n(xh.mean(1)), n(eh.mean(1))
        loss = (0.5 * ce(logit_scale * n(support.reshape(-1, support.shape[-1])) @ protos.T, y)
                + 0.25 * ce(protos @ text.projected.T, torch.arange(c))
                + 0.25 * ce(uprot @ text.eos.T, torch.arange(c))
                + 0.1 * ce(n(xh.reshape(-1, xh.shape[-1])) @ protos.T, y)
                + 0.1 * ((bias.norm(dim=-1) - bias.norm(dim=-1).mean()) ** 2).mean())
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, settings)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            f_bar = n(support.mean(1))
            protos = n(sm.bridge_views(support, bridge, ell, wt, bias[:, None])[0].mean(1))
            q = n(val[0])
            s1, s2 = q @ text.projected.T, q @ protos.T
            s3 = n(sm.bridge_views(val[0], bridge, ell, wt)[0]) @ f_bar.T
            div = sm.divergence(f_bar[None], text.projected)
            logits = sm.blend_logits(sm.Maps(s1[None], s2[None], s3[None]), div, fixed)[0, 0]
            acc = float(accuracy(logits, val_labels[0]))
            if acc > best_acc:
                best_acc, best_step, best = acc, step + 1, bridge.detach().clone()
    return best, best_step, torch.tensor(best_acc)


def step_products(seeds: int, classes: int, views_per_class: int, dim: int, width: int, val: int,
                  dtype=torch.float32):
    """The matrix products of one SeMoBridge-T training step with best-val selection, on random operands of
    the step's shapes and layouts (loss.loss_forward, loss.loss_backward, algebra.selection_maps with
    queries shared by the seeds): a function running them back to back, and their multiply-adds.
    N = C·K' support views; per seed: X B, u G, per-class sums of the views, ē Wt, four logit products,
    their five transposed products in the backward pass, Xᵀ ∂u; then Wtᵀ Bᵀ, (F̄ Wtᵀ) Bᵀ and one
    [Nv, D]×[D, S·(D + 2C)] product for the validation maps."""
    s, c, k, d, w, nv = seeds, classes, views_per_class, dim, width, val
    n = c * k
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    x, b, gram, wt = r(s, n, d), r(s, d, w), r(w, w), r(w, d)
    u, v, image_text, grad_u = r(s, n, w), r(s, n, w), r(s, n, w), r(s, n, w)
    ehat, mean, text_w, eos = r(s, c, w), r(s, c, w), r(c, w), r(c, w)
    rho, per_class = r(s * c, 1, k), r(s * c, w, 1)
    logits, small = r(s, n, c), r(s, c, c)
    image_w, queries = r(s, c, w), r(nv, d)
    rhs = torch.empty(s, d + 2 * c, d, dtype=dtype)
    outs = {name: torch.empty(shape, dtype=dtype) for name, shape in
            (("nw", (s, n, w)), ("dw", (s, d, w)), ("val", (nv, s * (d + 2 * c))))}

    def run() -> None:
        torch.bmm(x, b, out=outs["nw"])                                                 # u = X B
        torch.mm(u.view(-1, w), gram, out=outs["nw"].view(-1, w))                       # v = u G
        torch.bmm(rho, u.view(s * c, k, w))                                             # ē per class
        mean @ wt                                                                        # ē Wt
        ehat_t = ehat.transpose(1, 2)
        torch.bmm(v, ehat_t), torch.bmm(image_text, ehat_t), ehat @ text_w.T, mean @ eos.T   # logits
        torch.bmm(logits.transpose(1, 2), image_text).baddbmm_(logits.transpose(1, 2), v)    # ∂Ê
        small @ text_w, ehat @ gram, small @ eos
        torch.bmm(logits, ehat)                                                          # ∂u from cons
        torch.bmm(u.view(s * c, k, w), per_class)                                        # ∂ē·u per view
        torch.bmm(x.transpose(1, 2), grad_u, out=outs["dw"])                             # Xᵀ ∂u
        torch.matmul(wt.T, b.transpose(1, 2), out=rhs[:, :d])                            # validation
        torch.matmul(image_w, b.transpose(1, 2), out=rhs[:, d:d + c])
        torch.mm(queries, rhs.view(-1, d).T, out=outs["val"])

    madds = s * (n * d * w + n * w * w + n * w + c * w * d + 2 * n * w * c + 2 * c * w * c + 2 * n * c * w
                 + c * c * w + c * w * w + c * c * w + n * c * w + n * w + d * n * w + d * w * d + c * w * d) \
        + nv * d * s * (d + 2 * c)
    return run, madds


def matmul_floor(seeds: int, classes: int, views_per_class: int, dim: int, width: int, val: int,
                 repeats: int = 20, dtype=torch.float32, clock=time.perf_counter) -> float:
    """Seconds of one step's matrix products alone (step_products), the mean of `repeats` runs back to back
    (as a training loop runs its steps): the floor a step of this size cannot go below at this precision on
    this machine."""
    run, _ = step_products(seeds, classes, views_per_class, dim, width, val, dtype)
    run()
    start = clock()
    for _ in range(repeats):
        run()
    return (clock() - start) / repeats


def _train_inputs(task: FewShotTask):
    text = class_text(task)
    views = sm.weighted_views(task.support, task.support_mask)
    s = task.num_seeds
    return views, text, task.text_projection, task.val.expand(s, -1, -1), task.val_labels.expand(s, -1)


def _timed_steps(task: FewShotTask, steps: int, context=None, clock=time.perf_counter) -> tuple[float, int]:
    """(seconds of train_bridge over `steps` steps, setup included; selected step of seed 1); `context`: a
    function returning the context manager to run it in (None: none)."""
    import contextlib

    views, text, wt, val, labels = _train_inputs(task)
    initial = sm.initial_bridge(wt)
    with context() if context else contextlib.nullcontext():
        start = clock()
        out = train_bridge(views, text, wt, initial, 100.0, TrainSettings(steps=steps), val, labels)
        seconds = clock() - start
    return seconds, int(out.selected_step[0])


def bench_floor(args) -> None:
    """The step against the floor of its own matrix products, fp32 and bf16, at each of args.floor_classes;
    floor and step alternate `args.floor_repeats` times and the best of each is kept (a shared VM). With one
    torch thread both are timed in this process's CPU time (time.process_time: what other processes on a
    shared machine take is not counted), else in wall time."""
    from clipbridge.bridge.precision import products_in, resolve_precision

    bf16 = resolve_precision("bf16", "semobridge-t", "cpu")
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    print(f"step vs matmul floor, {'CPU' if clock is time.process_time else 'wall'} time, torch threads "
          f"{torch.get_num_threads()}")
    for c in args.floor_classes:
        task = synthetic_task(classes=c, shots=args.shots, dim=args.dim, width=args.dim, val=args.val)
        steps = max(MIN_FLOOR_STEPS, args.floor_steps * 101 // c)
        floor, runs = float("inf"), {}
        for _ in range(args.floor_repeats):       # a step = (T(steps) − T(1)) / (steps − 1): no setup
            floor = min(floor, matmul_floor(1, c, args.shots, args.dim, args.dim, args.val, repeats=steps,
                                            clock=clock))
            for label, context in (("fp32", None), ("bf16", lambda: products_in(bf16)))[:2 if args.bf16 else 1]:
                for n in (1, steps):
                    seconds, chosen = _timed_steps(task, n, context, clock)
                    best = runs.get((label, n), (float("inf"), 0))
                    runs[(label, n)] = (min(best[0], seconds), chosen)
        step = (runs[("fp32", steps)][0] - runs[("fp32", 1)][0]) / (steps - 1)
        chosen = runs[("fp32", steps)][1]
        if args.bf16:
            bf16_step = (runs[("bf16", steps)][0] - runs[("bf16", 1)][0]) / (steps - 1)
            bf16_chosen = runs[("bf16", steps)][1]
        _, madds = step_products(1, c, args.shots, args.dim, args.dim, args.val)
        line = (f"C={c}: fp32 step {step * 1e3:.1f} ms, its products alone (floor) {floor * 1e3:.1f} ms "
                f"({2 * madds / floor / 1e9:.0f} GFLOP/s) -> step at {floor / step * 100:.0f} % of the floor "
                f"(best of {args.floor_repeats} runs of {steps} steps, setup taken off)")
        if args.bf16:
            line += (f"; bf16 ({bf16.kernel}) step {bf16_step * 1e3:.1f} ms = {floor / bf16_step:.2f}x the fp32 "
                     f"floor's speed, selected step {bf16_chosen} vs fp32 {chosen} over {steps} steps")
        print(line, flush=True)


def bench_train(args) -> None:
    if args.floor_classes:
        bench_floor(args)
    print(f"SeMoBridge-T training, {args.classes} classes x {args.shots} shots, D=W={args.dim}, {args.val} val "
          f"queries, best-val selection every step; torch threads {torch.get_num_threads()}")
    task = synthetic_task(classes=args.classes, shots=args.shots, dim=args.dim, width=args.dim, val=args.val)
    views, text, wt, val, labels = _train_inputs(task)
    short = TrainSettings(steps=args.baseline_steps)
    if not args.baseline_steps:
        return

    start = time.perf_counter()
    ref_bridge, ref_step, ref_acc = paper_training(views, text, wt, val, labels, short)
    base = (time.perf_counter() - start) / args.baseline_steps
    start = time.perf_counter()
    out = train_bridge(views, text, wt, sm.initial_bridge(wt), 100.0, short, val, labels)
    ours_short = (time.perf_counter() - start) / args.baseline_steps
    diff = float((out.bridge[0] - ref_bridge).abs().max() / ref_bridge.abs().max())
    print(f"{args.baseline_steps} steps: paper procedure {base * 1e3:.1f} ms/step, ours {ours_short * 1e3:.1f} ms/step "
          f"({base / ours_short:.2f}x); selected step paper {ref_step} / ours {int(out.selected_step[0])}, "
          f"val acc {float(ref_acc):.2f} / {float(out.selected_accuracy[0]):.2f}, bridge max rel diff {diff:.1e}",
          flush=True)
    if args.steps:
        start = time.perf_counter()
        full = train_bridge(views, text, wt, sm.initial_bridge(wt), 100.0, TrainSettings(steps=args.steps),
                            val, labels)
        ours = time.perf_counter() - start
        print(f"{args.steps} steps: ours {ours:.1f} s measured (selected step {int(full.selected_step[0])}); paper "
              f"procedure {base * args.steps:.1f} s extrapolated from {args.baseline_steps} steps -> "
              f"{base * args.steps / ours:.2f}x", flush=True)

    if args.batch_seeds > 1:
        seeds = tuple(range(1, args.batch_seeds + 1))
        many = synthetic_task(classes=args.classes, shots=args.shots, dim=args.dim, width=args.dim, val=args.val,
                              seeds=seeds)
        settings = TrainSettings(steps=args.batch_steps)
        timing = {}
        for label, t in (("1 seed", synthetic_task(classes=args.classes, shots=args.shots, dim=args.dim,
                                                   width=args.dim, val=args.val)), (f"{len(seeds)} seeds", many)):
            inputs = _train_inputs(t)
            start = time.perf_counter()
            train_bridge(*inputs[:3], sm.initial_bridge(wt), 100.0, settings, *inputs[3:])
            timing[label] = time.perf_counter() - start
        one, batch = timing.values()
        print(f"{args.batch_steps} steps: 1 seed {one:.2f} s, {len(seeds)} seeds batched {batch:.2f} s "
              f"= {batch / one:.2f}x the time of one ({len(seeds) * one / batch:.2f}x faster than one after another)")


def bench_affine(args) -> None:
    """Fit seconds of "semobridge" and ms per step of "semobridge-t" (best-val selection), linear vs affine."""
    from dataclasses import replace

    from clipbridge.bridge.registry import get_method

    print(f"affine vs linear text projection, {args.classes} classes x {args.shots} shots, D=W={args.dim}, "
          f"{args.val} val queries; torch threads {torch.get_num_threads()}")
    linear = synthetic_task(classes=args.classes, shots=args.shots, dim=args.dim, width=args.dim, val=args.val)
    g = torch.Generator().manual_seed(1)
    bias = 5.0 * torch.nn.functional.normalize(torch.randn(args.dim, generator=g), dim=0)
    affine = replace(linear, text_projected=linear.text_projected + bias, text_projection_bias=bias)
    for name, hp in (("semobridge", {}), ("semobridge-t", {"steps": args.steps, "warmup": min(500, args.steps)})):
        times = {"linear": float("inf"), "affine": float("inf")}
        for _ in range(args.repeats):               # alternating, best of `repeats`: the VM is shared
            for label, task in (("linear", linear), ("affine", affine)):
                start = time.perf_counter()
                state = get_method(name).fit(task, **hp)
                times[label] = min(times[label], time.perf_counter() - start - state.info["search_seconds"])
        unit = (f"{times['linear'] / args.steps * 1e3:.1f} / {times['affine'] / args.steps * 1e3:.1f} ms per step"
                if name == "semobridge-t" else f"{times['linear']:.2f} / {times['affine']:.2f} s")
        print(f"{name}: linear / affine {unit} without the blend search ({times['affine'] / times['linear']:.2f}x, "
              f"best of {args.repeats})", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.bridge.speed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ps = sub.add_parser("search")
    ps.add_argument("--trials", type=int, default=1000)
    ps.add_argument("--sizes", nargs="+", default=["101x16x404", "101x16x2000"], help="CLASSESxSHOTSxVAL")
    ps.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ps.add_argument("--rounds", type=int, default=SEARCH_DEFAULTS["search_rounds"])
    ps.add_argument("--per-round", type=int, default=SEARCH_DEFAULTS["search_per_round"])
    pt = sub.add_parser("train")
    pt.add_argument("--classes", type=int, default=101)
    pt.add_argument("--shots", type=int, default=16)
    pt.add_argument("--dim", type=int, default=512)
    pt.add_argument("--val", type=int, default=2000)
    pt.add_argument("--steps", type=int, default=5000, help="full run of ours (0: skip)")
    pt.add_argument("--baseline-steps", type=int, default=200)
    pt.add_argument("--batch-seeds", type=int, default=10)
    pt.add_argument("--batch-steps", type=int, default=50)
    pt.add_argument("--floor-classes", type=int, nargs="*", default=[101, 1000],
                    help="class counts at which the step is set against its matmul floor (none: skip)")
    pt.add_argument("--floor-steps", type=int, default=20, help="steps per floor timing at 101 classes (fewer "
                    "at more classes, at least MIN_FLOOR_STEPS)")
    pt.add_argument("--floor-repeats", type=int, default=3)
    pt.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the step with bf16 products (bridge.precision)")
    pa = sub.add_parser("affine")
    for option, default in (("--classes", 101), ("--shots", 16), ("--dim", 512), ("--val", 2000), ("--steps", 200),
                            ("--repeats", 3)):
        pa.add_argument(option, type=int, default=default)
    for p in (ps, pt, pa):
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    from clipbridge.bridge.ops import benchmark_process

    benchmark_process(args.threads)  # as the CLI does: subnormal softmax tails slow CPU products
    {"search": bench_search, "train": bench_train, "affine": bench_affine}[args.what](args)


if __name__ == "__main__":
    main()
