"""Parity of SeMoBridge / SeMoBridge-T, APE, Tip-Adapter and GDA with the authors' implementations on a golden
fixture.

    python -m clipbridge.bridge.parity FIXTURE.npz [--dtype float64|float32] [--tolerance T]

Loads a golden fixture (synthetic inputs and what the authors' code computed from them; any C, K, P, W, D, N), recomputes every output key with
the same functions the methods use (bridge.text, bridge.methods.semobridge.algebra; for a fixture whose key
`method` is "ape": bridge.methods.ape, see bridge/methods/ape/parity.py; "tip-adapter" or "gda": the registered
method fitted with its paper recipe's search, the official grid, see bridge/parity_baselines.py), prints one
line per key with its relative error and exits 1 if any key is off. APE's kept channels and chosen parameters,
Tip-Adapter's chosen (β, α), GDA's α grid and chosen α must match exactly.

Relative error of a key = max|ours − reference| / max|reference| over the whole tensor (a scale-aware
measure: entries near zero, e.g. cosines or gradients that cross zero, are not blown up by tiny
denominators). Default tolerance: 1e-6 in float64, 1e-4 in float32.
"""
from __future__ import annotations

import argparse
import ast
import sys
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge import loss as sl
from clipbridge.bridge.methods.semobridge import algebra as sm
from clipbridge.bridge.errors import BridgeInputError
from clipbridge.bridge.methods.ape.parity import EXACT_KEYS as APE_EXACT_KEYS
from clipbridge.bridge.methods.ape.parity import recompute_ape
from clipbridge.bridge.parity_baselines import EXACT_KEYS as BASELINE_EXACT_KEYS
from clipbridge.bridge.parity_baselines import recompute_baseline
from clipbridge.bridge.text import class_mean, class_text_tensors

DEFAULT_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
_NPY_DTYPES = {"f8": torch.float64, "f4": torch.float32, "i8": torch.int64, "i4": torch.int32,
               "b1": torch.bool}


def load_npz(path: str | Path) -> dict[str, Tensor | str]:
    """Read an uncompressed or compressed .npz of plain little-endian arrays into torch tensors (no numpy);
    a 0-d unicode array (such as the key `method`) becomes a Python str."""
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".npy"):
                    out[name[:-4]] = _parse_npy(archive.read(name), f"{path}:{name}")
    except (OSError, zipfile.BadZipFile) as err:
        raise BridgeInputError(f"cannot read fixture {path}: {err}") from None
    return out


def _parse_npy(data: bytes, where: str) -> Tensor | str:
    if data[:6] != b"\x93NUMPY":
        raise BridgeInputError(f"{where} is not a .npy array")
    major = data[6]
    size_bytes = 2 if major == 1 else 4
    header_len = int.from_bytes(data[8:8 + size_bytes], "little")
    start = 8 + size_bytes
    header = ast.literal_eval(data[start:start + header_len].decode("latin1"))
    descr, shape = header["descr"], tuple(header["shape"])
    if descr[:2] == "<U" and shape == ():
        return data[start + header_len:].decode("utf-32-le").rstrip("\x00")
    if descr[0] not in "<|" or descr[1:] not in _NPY_DTYPES or header["fortran_order"]:
        raise BridgeInputError(f"{where}: unsupported array layout {descr!r}")
    body = bytearray(data[start + header_len:])
    dtype = _NPY_DTYPES[descr[1:]]
    if not body:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(body, dtype=dtype).reshape(shape).clone()


def recompute(fx: dict[str, Tensor], dtype: torch.dtype = torch.float64, logit_scale: float = 100.0) -> dict[str, Tensor]:
    """Every output key of a fixture, recomputed from its input keys with the project's functions."""
    f = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in fx.items()}
    wt = f["text_projection"]                                                    # [W, D]
    c, p, w = f["text_eos"].shape
    eos = f["text_eos"].reshape(c * p, w)
    classes = torch.arange(c).repeat_interleave(p)
    text = class_text_tensors(eos @ wt, eos, classes, c)
    support = f["fewshot"].unsqueeze(0)                                          # [1, C, K, D]
    views = sm.weighted_views(support, torch.ones(support.shape[1:3], dtype=torch.bool))
    b0 = sm.initial_bridge(wt)
    out = {
        "text_projected_normed": text.projected,
        "text_encoded_normed": text.eos,
        "text_encoded": class_mean(eos, classes, c),
        "avg_text_length": torch.tensor(text.eos_length, dtype=dtype),
        "pinv": b0,
    }
    bridged, pseudo = sm.bridge_views(f["fewshot"], b0, text.eos_length, wt)
    out["bridged_fewshot_projected"], out["bridged_fewshot_eos"] = bridged, pseudo
    image_protos = sm.image_prototypes(views, c)
    protos = sm.bridged_prototypes(views, c, b0, wt)
    out["prototypes"] = protos[0]
    for split in ("val", "test"):
        maps = sm.cosine_maps(f[split].unsqueeze(0), text.projected, image_protos, protos, b0, wt)
        for name, value in zip(("S1", "S2", "S3"), maps):
            out[f"{split}_{name}"] = value[0]
        if split == "test":
            test_maps = maps
    div = sm.divergence(image_protos, text.projected)
    out["divergence"] = div[0].unsqueeze(-1)
    out["blend_test_logits"] = sm.blend_logits(test_maps, div, f["blend_params"].unsqueeze(0))[0]

    bridge = f["train_B"].unsqueeze(0).clone().requires_grad_(True)
    bias = f["train_bias"].unsqueeze(0).clone().requires_grad_(True)
    fwd = sl.trained_losses(views, bridge, bias, text.projected, text.eos, wt, wt @ wt.T, logit_scale)
    fwd.losses["total"].sum().backward()
    for name, value in fwd.losses.items():
        out[f"loss_{name}"] = value[0].detach()
    out["grad_B"], out["grad_bias"] = bridge.grad[0], bias.grad[0]
    return out


def relative_error(ours: Tensor, reference: Tensor) -> float:
    """max|ours − reference| / max|reference| (inf on a shape mismatch; absolute error if reference is 0)."""
    if tuple(ours.shape) != tuple(reference.shape):
        return float("inf")
    ours, reference = ours.to(torch.float64), reference.to(torch.float64)
    scale = float(reference.abs().max()) if reference.numel() else 1.0
    return float((ours - reference).abs().max()) / (scale or 1.0) if reference.numel() else 0.0


EXACT_KEYS = {"semobridge": (), "ape": APE_EXACT_KEYS, **BASELINE_EXACT_KEYS}


def fixture_method(fx: dict) -> str:
    """The fixture's key `method` ("ape", "tip-adapter", "gda"); "semobridge" for a fixture without it."""
    method = fx.get("method", "semobridge")
    if method not in EXACT_KEYS:
        raise BridgeInputError(f"unknown fixture method {method!r} (known: {', '.join(EXACT_KEYS)})")
    return method


def exact_keys(fx: dict) -> tuple[str, ...]:
    """Output keys that must match exactly (kept channels, chosen parameters, the α grid)."""
    return EXACT_KEYS[fixture_method(fx)]


def compare(fx: dict[str, Tensor], dtype: torch.dtype) -> dict[str, float]:
    """Relative error of every output key present in the fixture."""
    method = fixture_method(fx)
    if method == "ape":
        ours = recompute_ape(fx, dtype)
    elif method == "semobridge":
        ours = recompute(fx, dtype)
    else:
        ours = recompute_baseline(fx, dtype)
    return {key: relative_error(value, fx[key]) for key, value in ours.items() if key in fx}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipbridge.bridge.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--tolerance", type=float, default=None)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[dtype]
    try:
        fixture = load_npz(args.fixture)
        errors, exact = compare(fixture, dtype), exact_keys(fixture)
    except (BridgeInputError, KeyError) as err:
        print(f"error: {args.fixture}: {err}", file=sys.stderr)
        return 2
    failed = 0
    for key, err in errors.items():
        ok = err == 0.0 if key in exact else err <= tolerance
        failed += not ok
        print(f"{key:28s} {err:.3e}  {'ok' if ok else 'OFF'}{' (exact)' if key in exact else ''}")
    exactly = f", {', '.join(k for k in exact if k in errors)} exactly" if exact else ""
    print(f"{len(errors) - failed}/{len(errors)} keys within {tolerance:g} ({args.dtype}){exactly}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
