"""`clipbridge export RUN --out classifier.pt`: one TorchScript file that plain torch loads (no clipbridge):
preprocessed images -> class probabilities, with the preprocessing and class names in its metadata
(evaluate/fitting/export.py)."""
from __future__ import annotations

from pathlib import Path

import click

from clipbridge.errors import ClipBridgeError
from clipbridge.evaluate.reporting.records import writable_dir


@click.command("export")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the file to write (e.g. classifier.pt).")
@click.option("--seed", default=None, type=int, help="which seed's fit to export (default: the run's first).")
@click.option("--pretrained", default=None,
              help="the weights file, when it is no longer where the run's cache was extracted from (its "
                   "SHA-256 must be the cache's).")
@click.option("--device", default="cpu", show_default=True,
              help="the device the exported model runs on (it is traced there).")
def export(run, out, seed, pretrained, device) -> None:
    """Write the fitted RUN (one seed) as a TorchScript classifier: its image encoder, the method's head and
    its temperature; images [B, 3, H, W] preprocessed as the metadata says -> probabilities [B, C]."""
    from clipbridge.evaluate.fitting.api import load_run
    from clipbridge.evaluate.fitting.export import METADATA_NAME, export_run

    if Path(out).exists() and Path(out).is_dir():
        raise ClipBridgeError(f"--out {out} is a folder; give a file name such as classifier.pt")
    writable_dir(Path(out).parent, "--out")
    fitted = load_run(run)
    meta = export_run(fitted, out, seed=seed, pretrained=pretrained, device=device)
    size = "x".join(map(str, meta["preprocess"]["size"]))
    click.echo(f"exported {meta['method']} (seed {meta['seed']}, {len(meta['classnames'])} classes, calibration "
               f"{meta['calibration']['method']}, temperature {meta['calibration']['temperature_used']:.4g}) to {out}")
    click.echo(f"  input: images [B, 3, {size}] resized ({meta['preprocess']['resize_mode']} side, "
               f"{meta['preprocess']['interpolation']}), center-cropped, normalised; metadata: {METADATA_NAME} "
               "(torch.jit.load(path, _extra_files={...}))")
