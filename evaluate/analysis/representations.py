"""What each bridge does to an image embedding: the representations the gap analysis compares.

x is a raw image embedding (encode_image's output, view 0 for test images); every representation is
L2-normalised, n(v) = v / ‖v‖; one seed s of a fitted state (seeds are batched) is used.

    raw           n(x)
    semobridge    n(x̂),  x̂ = ℓ · n(x B0) · Wt    B0 = pinv(Wt) (closed form); ℓ = mean EOS length
    semobridge-t  n(x̂),  x̂ = ℓ · n(x B) · Wt     B = seed s's trained bridge, WITHOUT the class bias b_c
                                                 (the bias needs the label: SeMoBridge-T adds it to its
                                                 few-shot prototypes only, and bridges queries without it,
                                                 so it is not part of the map applied to an image)
    cmm           v' = n(n(x) (I + Δ))           Δ = seed s's trained residual map

(bridge.methods.semobridge.algebra.bridge_views and bridge.methods.cmm.mapped compute them; ℓ cancels in
n(x̂) but is kept so x̂ is exactly the method's bridged embedding.) The text side of every representation
is T̄ = n(mean_p n(e_p Wt)) of the analysed prompt sets (bridge.text.class_text), the zero-shot class
prototypes; CMM's logits compare v' with its learned prototypes n(T) instead, so CMM also reports the
gap against those (`own_text`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from clipbridge.bridge.methods.cmm import mapped
from clipbridge.bridge.methods.semobridge.algebra import affine_head, bridge_views
from clipbridge.bridge.registry import FittedState
from clipbridge.errors import ClipBridgeError

RAW = "raw"


@dataclass(frozen=True)
class ImageMap:
    """One method's map of raw images [N, D] to unit rows [N, D], and the text it compares them with when
    that is not T̄ (own_text [C, D] unit rows, named own_text_name)."""

    name: str
    formula: str
    apply: Callable[[Tensor], Tensor]
    own_text: Tensor | None = None
    own_text_name: str | None = None


@dataclass(frozen=True)
class Representation:
    """images [N, D] (analysed test images) and support [M, D] (the few-shot gallery) in one representation,
    unit rows; own_text as in ImageMap."""

    name: str
    formula: str
    images: Tensor
    support: Tensor
    own_text: Tensor | None = None
    own_text_name: str | None = None


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _tensor(state: FittedState, name: str, seed_index: int | None = None) -> Tensor:
    """A state tensor, seed `seed_index`'s slice when it has a leading seed dim of per-seed tensors."""
    try:
        value = state.tensors[name]
    except KeyError:
        raise ClipBridgeError(f"the {state.method} state has no tensor {name!r} (saved by another version?)") \
            from None
    return value[seed_index] if seed_index is not None else value


def semobridge_map(state: FittedState, seed_index: int, eos_length: float) -> ImageMap:
    """x ↦ n(ℓ · n(x B) · Wt) with the state's bridge B ([D, W] shared or [S, D, W] per seed), no class bias;
    with an affine text projection (the state holds b), x ↦ n(ℓ · n((x − b) B) · Wt + b)."""
    bridge = _tensor(state, "bridge")
    bridge = bridge[seed_index] if bridge.ndim == 3 else bridge
    wt = _tensor(state, "text_projection")
    affine = None
    if "projection_bias" in state.tensors:
        affine = affine_head(wt, state.tensors["projection_bias"], float(state.tensors["eos_length"]))
    kind = "B0 = pinv(Wt)" if state.method == "semobridge" else "B trained"
    formula = "n(ℓ·n(x B)·Wt)" if affine is None else "n(ℓ·n((x − b) B)·Wt + b)"
    return ImageMap(state.method, f"{formula}, {kind}, no class bias",
                    lambda x: _unit(bridge_views(x.to(bridge.dtype), bridge, eos_length, wt, affine=affine)[0]))


def cmm_map(state: FittedState, seed_index: int, eos_length: float) -> ImageMap:
    """v ↦ n(v (I + Δ)) of v = n(x) with seed `seed_index`'s Δ; own text = its learned prototypes n(T)."""
    delta = _tensor(state, "delta", seed_index)
    protos = _unit(_tensor(state, "protos", seed_index))
    return ImageMap(state.method, "n(n(x)(I + Δ))",
                    lambda x: mapped(_unit(x.to(delta.dtype))[None], delta[None])[0], protos,
                    "learned prototypes n(T)")


# The methods whose fitted state maps images, and how (state, seed index, ℓ) -> ImageMap.
IMAGE_MAPS: dict[str, Callable[[FittedState, int, float], ImageMap]] = {
    "semobridge": semobridge_map, "semobridge-t": semobridge_map, "cmm": cmm_map}


def image_map(state: FittedState, seed_index: int, eos_length: float) -> ImageMap:
    """The ImageMap of a fitted state; a ClipBridgeError for a method that does not map images."""
    if state.method not in IMAGE_MAPS:
        raise ClipBridgeError(f"method {state.method!r} does not map images; analyze takes "
                              f"{', '.join(IMAGE_MAPS)}")
    return IMAGE_MAPS[state.method](state, seed_index, eos_length)


def representations(images: Tensor, support: Tensor, maps: list[ImageMap]) -> list[Representation]:
    """raw (n(x)) then one Representation per map, of raw test images [N, D] and support images [M, D]."""
    out = [Representation(RAW, "n(x)", _unit(images), _unit(support))]
    for m in maps:
        out.append(Representation(m.name, m.formula, m.apply(images), m.apply(support), m.own_text,
                                  m.own_text_name))
    return out
