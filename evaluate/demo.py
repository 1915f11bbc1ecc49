"""`cli.py demo`: everything end to end, offline, in one folder.

1. A cache: the procedural "shapes" dataset encoded by the tiny bundled CLIP when the extract stage and
   its checkpoint are available, otherwise a synthetic cache (cache.synthetic) with the same layout.
2. A benchmark of zeroshot, tip-adapter, semobridge, semobridge-t and cmm (those registered) over shots
   1, 4, 16 and 3 seeds (`quick`: shots 1, 4, 2 seeds, a small cache, 20-step SeMoBridge-T, 30-step CMM), then
   the Markdown table and the plot's path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from evaluate.bench import BenchSpec, run_bench

DEMO_METHODS = ("zeroshot", "tip-adapter", "semobridge", "semobridge-t", "cmm")
TINY_MODEL = "clipbridge-tiny"
# --quick trains SeMoBridge-T and CMM briefly (a smoke run of the whole path, not the paper's schedule).
QUICK_HPARAMS = {"semobridge-t": {"steps": 20, "warmup": 5}, "cmm": {"steps": 30}}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def run_demo(out: Path, *, quick: bool = False, device: str = "auto",
             echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Build (or reuse) the demo cache, bench it, print the table; returns the output paths."""
    from bridge.registry import METHODS

    import bridge.methods  # noqa: F401  (registers every method)

    out.mkdir(parents=True, exist_ok=True)
    cache_path = demo_cache(out, quick=quick, echo=echo)
    methods = tuple(m for m in DEMO_METHODS if m in METHODS)
    absent = [m for m in DEMO_METHODS if m not in METHODS]
    if absent:
        echo(f"note: method(s) not available in this build, left out: {', '.join(absent)}")
    shots, seeds = ((1, 4), (1, 2)) if quick else ((1, 4, 16), (1, 2, 3))
    hparams = QUICK_HPARAMS if quick else {}
    spec = BenchSpec(caches=(cache_path,), methods=methods, shots=shots, seeds=seeds, device=device,
                     hparams={m: h for m, h in hparams.items() if m in methods})
    echo(f"bench {', '.join(methods)} on {cache_path}: shots {shots}, seeds {seeds}")
    outcome = run_bench(spec, out / "results", "demo", progress=not quick, echo=echo)
    echo(outcome.markdown.rstrip("\n"))
    echo(f"plot: {outcome.outputs['plot']}")
    echo(f"table: {outcome.outputs['csv']}")
    return outcome.outputs


def demo_cache(out: Path, *, quick: bool, echo: Callable[[str], None]) -> Path:
    """The shapes cache from the tiny model if extraction can make it, else a synthetic cache."""
    shapes = _extract_shapes(out, echo)
    if shapes is not None:
        return shapes
    from cache.synthetic import write_synthetic_cache

    path = out / ("synthetic-quick.h5" if quick else "synthetic.h5")
    if not path.is_file():
        size = dict(classes=8, train_per_class=16, dim=32, width=24, val=4, test=10) if quick else \
            dict(classes=20, train_per_class=20, dim=64, width=48, val=8, test=30)
        write_synthetic_cache(path, views=1, prompts=3, seed=0, **size)
    echo(f"cache: synthetic ({path})")
    return path


def _extract_shapes(out: Path, echo: Callable[[str], None]) -> Path | None:
    """Run `extract --dataset shapes` with the bundled tiny checkpoint; None (with a note) if unsupported."""
    try:
        from extract.commands import extract
        from extract.datasets import get_dataset  # noqa: F401
    except ImportError as error:
        echo(f"note: extraction is not available ({error}); using a synthetic cache")
        return None
    weights = sorted(p for p in (Path(__file__).resolve().parents[1] / "extract" / "weights").glob("*")
                     if p.suffix in CHECKPOINT_SUFFIXES)
    if not weights:
        echo("note: no tiny CLIP checkpoint under extract/weights; using a synthetic cache")
        return None
    path = out / "cache" / "shapes.h5"
    if path.is_file():
        echo(f"cache: {path} (already extracted)")
        return path
    options = {p.name for p in extract.params}
    if "out" not in options:
        echo("note: extract has no --out option; using a synthetic cache")
        return None
    args = ["--dataset", "shapes", "--model", TINY_MODEL, "--pretrained", str(weights[0]), "--out", str(path),
            "--root", str(out / "data"), "--device", "cuda" if torch.cuda.is_available() else "cpu",
            "--workers", "0"]
    echo(f"cache: extracting shapes with {TINY_MODEL} ({weights[0].name}) into {path}")
    extract.main(args=args, standalone_mode=False)
    return path if path.is_file() else None
