"""SeMoBridge's tensor algebra (METHOD.md §2; the trained loss of §3 is in bridge.methods.semobridge.loss): pure
functions, no I/O.

Shapes: S seeds, C classes, K' support views per class, N queries, M blend candidates, D joint size,
W text width. `B` is the bridge [D, W] (shared) or [S, D, W] (per seed); `bias` is [S, C, W] or None.

The bridge of a raw embedding x with class bias c:  u = x B + c,  ê = ℓ n(u),  x̂ = ê Wt.
Two identities keep the hot paths cheap and are used everywhere (so the parity check covers them):
  n(x̂) = n(u Wt)                      (ℓ and ‖u‖ are positive scalars per row)
  P_c  = n(mean_k x̂_k) = n(ē_c Wt)    with ē_c = mean_k n(u_k)   (Wt applied after the mean)

Affine text projections (SigLIP, SigLIP2: t = e Wt + b with a projection bias b [D]). The bridge inverts
the affine map and applies it again:
  u = (x − b) B + c,   ê = ℓ n(u),   x̂ = ê Wt + b,   B0 = pinv(Wt) as before.
Both identities above use linearity (x̂ ∝ u Wt; mean_k x̂_k = ℓ ē Wt), and x̂ is no longer a multiple of
u Wt. Homogeneous coordinates make it linear again. With W̃t = [Wt; b] [W+1, D] (b as one more row) and
ũ = [u, ‖u‖/ℓ] [W+1]:
  x̂ = ℓ n(u) Wt + b = (ℓ/‖u‖) (u Wt + (‖u‖/ℓ) b) = (ℓ/‖u‖) ũ W̃t,   so   n(x̂) = n(ũ W̃t);
and since the weights of a class's views sum to 1, mean_k x̂_k = ℓ ē_c Wt + b = ℓ ẽ_c W̃t with
ẽ_c = [ē_c, 1/ℓ], so   P_c = n(ẽ_c W̃t).
So every product with Wt (and G = Wt Wtᵀ) of the linear code becomes the same product with W̃t (and
G̃ = W̃t W̃tᵀ) of these (W+1)-vectors, and the cheap product orders carry over (AffineHead holds b, ℓ, W̃t,
G̃). What changes in substance: ℓ no longer cancels (it weighs b against u Wt), and a query's bridged
embedding depends on its scale (x − b), so raw queries are used where the linear code may use n(q).
With b = 0, affine_head returns None and the linear code runs: every output is bit-for-bit the linear one.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.errors import BridgeInputError

PINV_ATOL = 0.3          # absolute singular-value cut of B0 = pinv(Wt); rtol = 0
BLEND_PARAMS = ("s", "alpha", "beta", "gamma", "lambda1", "lambda2", "lambda3")
BLEND_LOW = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
BLEND_HIGH = (1.5, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0)
FIXED_BLEND = (0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)   # SeMoBridge-T's model-selection blend


class Workspace:
    """Named output buffers reused from call to call by a loop's per-step tensors: on CPU a fresh
    multi-MB tensor costs page faults on a par with the product that fills it. A buffer is overwritten by
    the next call that asks for its name, so a result read from one lives until then."""

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def __call__(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A [shape] tensor of like's dtype and device (uninitialised) kept under `name`."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf


# ----------------------------------------------------------------------------------------------- bridge
def initial_bridge(text_projection: Tensor, atol: float = PINV_ATOL) -> Tensor:
    """B0 = pinv(Wt) [D, W] from Wt [W, D]; singular values below `atol` (absolute, rtol 0) are dropped."""
    return torch.linalg.pinv(text_projection, atol=atol, rtol=0.0)


def apply_bridge(x: Tensor, bridge: Tensor) -> Tensor:
    """x @ B: x [..., D] with B [D, W], or x [S, ..., D] with B [S, D, W] -> [..., W]."""
    if bridge.ndim == 2:
        return x @ bridge
    s, d = x.shape[0], x.shape[-1]
    return (x.reshape(s, -1, d) @ bridge).reshape(*x.shape[:-1], bridge.shape[-1])


def bridge_views(x: Tensor, bridge: Tensor, eos_length: float, text_projection: Tensor,
                 bias: Tensor | None = None, affine: AffineHead | None = None) -> tuple[Tensor, Tensor]:
    """Bridged embeddings x̂ [..., D] and pseudo EOS tokens ê [..., W] of raw x [..., D].

    bias, when given, is added to x B before normalising; it must broadcast to [..., W] (for support
    [S, C, K', D] pass bias[:, :, None, :]). With an affine projection: u = (x − b) B, x̂ = ê Wt + b.
    """
    u = apply_bridge(x if affine is None else x - affine.bias, bridge)
    if bias is not None:
        u = u + bias
    eos = eos_length * _normalize(u)
    return (eos @ text_projection if affine is None else eos @ text_projection + affine.bias), eos


# ------------------------------------------------------------------------------------- affine projection
class AffineHead(NamedTuple):
    """An affine text projection t = e Wt + b in the homogeneous form of the module docstring.

    bias b [D]; eos_length ℓ; projection W̃t = [Wt; b] [W+1, D]; gram G̃ = W̃t W̃tᵀ [W+1, W+1].
    """

    bias: Tensor
    eos_length: float
    projection: Tensor
    gram: Tensor


def affine_head(text_projection: Tensor, projection_bias: Tensor | None,
                eos_length: float | None) -> AffineHead | None:
    """AffineHead of Wt [W, D], b [D] and ℓ; None when b is None or zero (the projection is linear)."""
    if projection_bias is None or not bool(projection_bias.any()):
        return None
    bias = projection_bias.to(device=text_projection.device, dtype=text_projection.dtype)
    stacked = torch.cat([text_projection, bias.unsqueeze(0)], 0)
    return AffineHead(bias, float(eos_length), stacked, stacked @ stacked.T)


def homogeneous(u: Tensor, norm: Tensor | float, eos_length: float) -> Tensor:
    """[u, ‖u‖/ℓ] [..., W+1] of u [..., W] with its norm [..., 1] (or a number, 1 for ẽ = [ē, 1/ℓ])."""
    last = norm / eos_length if isinstance(norm, Tensor) else torch.full_like(u[..., :1], norm / eos_length)
    return torch.cat([u, last], -1)


def bridge_input(x: Tensor, affine: AffineHead | None, mask: Tensor | None = None) -> Tensor:
    """The bridge's input: x − b with an affine projection (rows where mask [...] is False stay as they
    are: zero padding), x itself with a linear one."""
    if affine is None:
        return x
    shifted = x - affine.bias
    return shifted if mask is None else torch.where(mask.unsqueeze(-1), shifted, x)


# ------------------------------------------------------------------------------------------- prototypes
class WeightedViews(NamedTuple):
    """Support views flattened class-major, padded views zeroed, weighted for class means (SeMoBridge's form;
    bridge.features.SupportViews is the other methods' plainer one).

    raw [S, C·K', D], unit [S, C·K', D] = n(raw), labels [C·K'], mask [C·K'] bool,
    weight [C·K'] = mask / (real views of the view's class): a masked class mean is a weighted sum.
    """

    raw: Tensor
    unit: Tensor
    labels: Tensor
    mask: Tensor
    weight: Tensor


def weighted_views(support: Tensor, support_mask: Tensor) -> WeightedViews:
    """WeightedViews of support [S, C, K', D] with support_mask [C, K']."""
    s, c, k, d = support.shape
    mask = support_mask.reshape(c * k)
    raw = torch.where(mask[:, None], support.reshape(s, c * k, d), torch.zeros((), dtype=support.dtype,
                                                                                device=support.device))
    norm = raw.norm(dim=-1, keepdim=True)
    if bool((norm[:, mask] == 0).any()):
        raise BridgeInputError("support holds an all-zero embedding among its real views")
    unit = raw / torch.where(norm > 0, norm, torch.ones_like(norm))
    counts = support_mask.sum(1).clamp_min(1).to(support.dtype)
    weight = (support_mask.to(support.dtype) / counts[:, None]).reshape(c * k)
    labels = torch.arange(c, device=support.device).repeat_interleave(k)
    return WeightedViews(raw, unit, labels, mask, weight)


def class_sum(x: Tensor, weight: Tensor, num_classes: int) -> Tensor:
    """Σ_k weight_k x_k per class of class-major rows x [S, C·K', X], weight [C·K'] or [S, C·K'] -> [S, C, X]."""
    s = x.shape[0]
    weighted = x * weight.unsqueeze(-1)
    return weighted.reshape(s, num_classes, -1, x.shape[-1]).sum(2)


def image_prototypes(views: WeightedViews, num_classes: int) -> Tensor:
    """F̄ [S, C, D] = n(mean of a class's raw views)."""
    return _normalize(class_sum(views.raw, views.weight, num_classes))


def bridged_prototypes(views: WeightedViews, num_classes: int, bridge: Tensor, text_projection: Tensor,
                       bias: Tensor | None = None, affine: AffineHead | None = None) -> Tensor:
    """P [S, C, D] = n(mean_k x̂(F[c,k]; b_c)) = n(mean_k n(u_k) Wt); bias [S, C, W] or None.
    With an affine projection: n(ẽ W̃t) = n(ℓ ē Wt + b), u from the support minus b."""
    u = _class_biased(apply_bridge(bridge_input(views.raw, affine, views.mask), bridge), bias, views.labels)
    unit = u / safe_norm(u, views.mask)
    mean = class_sum(unit, views.weight, num_classes)
    if affine is None:
        return _normalize(mean @ text_projection)
    return _normalize(homogeneous(mean, 1.0, affine.eos_length) @ affine.projection)


# ------------------------------------------------------------------------------------------------- maps
class Maps(NamedTuple):
    """The three cosine maps [S, N, C]: zero-shot prior, query vs bridged shots, bridged query vs shots."""

    s1: Tensor
    s2: Tensor
    s3: Tensor


def cosine_maps(queries: Tensor, text_prototypes: Tensor, image_protos: Tensor, bridged_protos: Tensor,
                bridge: Tensor, text_projection: Tensor, affine: AffineHead | None = None) -> Maps:
    """S1 = q̄ T̄ᵀ, S2 = q̄ Pᵀ, S3 = n(x̂(q; 0)) F̄ᵀ for raw queries [S, N, D].

    text_prototypes T̄ [C, D]; image_protos F̄ [S, C, D]; bridged_protos P [S, C, D]. A zero query row (a
    padding row) gives zero cosines.
    """
    unit = queries / safe_norm(queries)
    s1 = unit @ text_prototypes.T
    s2 = unit @ bridged_protos.transpose(-1, -2)
    return Maps(s1, s2, bridged_query_cosines(queries, bridge, text_projection, image_protos, affine=affine))


def bridged_query_cosines(queries: Tensor, bridge: Tensor, text_projection: Tensor, image_protos: Tensor,
                          gram: Tensor | None = None, affine: AffineHead | None = None) -> Tensor:
    """S3 [S, N, C] = n(x̂(q; 0)) F̄ᵀ = n(q B Wt) F̄ᵀ for raw queries [S, N, D], by the cheaper product order:
      y = q (B Wt):  D·W·D + N·D·D multiply-adds per seed;
      z = q B:       N·D·W + N·W·W (norm² = z·(z G), G = Wt Wtᵀ, given as `gram` or formed here),
                     numerator z (Wt F̄ᵀ).
    With an affine projection always the z order, on z̃ = [z, ‖z‖/ℓ] with z = (q − b) B (affine_query_cosines)."""
    if affine is not None:
        return affine_query_cosines(queries - affine.bias, bridge, affine, image_protos @ affine.projection.T)
    w, d = text_projection.shape
    if _project_bridge_first(queries.shape[-2], d, w):
        y = apply_bridge(queries, bridge @ text_projection)
        return (y / safe_norm(y)) @ image_protos.transpose(-1, -2)
    gram = text_projection @ text_projection.T if gram is None else gram
    return _cosines_through_z(queries, bridge, gram, image_protos @ text_projection.T)


def affine_query_cosines(shifted_queries: Tensor, bridge: Tensor, affine: AffineHead,
                         image_protos_w: Tensor) -> Tensor:
    """S3 [S, N, C] = n(x̂(q; 0)) F̄ᵀ = n(z̃ W̃t) F̄ᵀ for shifted queries q − b [S, N, D] or [N, D], with
    z = (q − b) B, z̃ = [z, ‖z‖/ℓ] and image_protos_w = F̄ W̃tᵀ [S, C, W+1]: N·D·W + N·(W+1)² multiply-adds."""
    z = torch.matmul(shifted_queries, bridge)                                            # [S, N, W]
    return _cosines_of_z(homogeneous(z, z.norm(dim=-1, keepdim=True), affine.eos_length), affine.gram,
                         image_protos_w)


def _cosines_through_z(queries: Tensor, bridge: Tensor, gram: Tensor, image_protos_w: Tensor) -> Tensor:
    """S3 [S, N, C] = n(q B Wt) F̄ᵀ by the z = q B order: numerator z (F̄ Wtᵀ)ᵀ, norm² = z·(z G).
    queries [S, N, D] or [N, D] (any positive scale per row; zero rows give zeros), bridge [D, W] or
    [S, D, W], gram G [W, W], image_protos_w = F̄ Wtᵀ [S, C, W]."""
    return _cosines_of_z(torch.matmul(queries, bridge), gram, image_protos_w)                 # z [S, N, W]


def _cosines_of_z(z: Tensor, gram: Tensor, image_protos_w: Tensor) -> Tensor:
    """n(z Wt) F̄ᵀ [S, N, C] of z [S, N, W] given G = Wt Wtᵀ and F̄ Wtᵀ (zero rows give zeros)."""
    norm = rowdot(z, z @ gram).clamp_min_(0).sqrt_()
    return torch.matmul(z, image_protos_w.transpose(-1, -2)).div_(torch.where(norm > 0, norm, 1.0))


def _project_bridge_first(n: int, d: int, w: int) -> bool:
    """Whether n queries cost less as q (B Wt) (D·W·D + N·D·D) than as z = q B with ‖z Wt‖² = z·(z G)
    (N·D·W + N·W·W); the products with F̄ᵀ cost the same either way."""
    return d * w * d + n * d * d <= n * d * w + n * w * w


def selection_maps(unit_queries: Tensor, bridge: Tensor, text_projection: Tensor, gram: Tensor,
                   image_protos_w: Tensor, bridged_protos: Tensor, work: Workspace | None = None) -> tuple[Tensor, Tensor]:
    """S2 = q̄ Pᵀ and S3 = n(q̄ B Wt) F̄ᵀ [S, N, C] (as cosine_maps) for unit queries q̄ [S, N, D], or [N, D]
    shared by the S seeds, bridge B [S, D, W], P [S, C, D] and image_protos_w = F̄ Wtᵀ [S, C, W].

    With H = B Wt (when it costs less, see _project_bridge_first): ONE product of q̄ with the stacked
    right-hand sides [H | B (Wt F̄ᵀ) | Pᵀ] (shared queries: all seeds' stacks side by side), S3's norm
    being ‖q̄ H‖; D·W·D + N·D·(D + 2C) multiply-adds per seed. Otherwise (few queries, or W < D) z = q̄ B
    first, then S3 = z (Wt F̄ᵀ) / √(z·(z G)) and S2 = q̄ Pᵀ: N·(D·W + W·W + W·C + D·C), with no product
    or copy of the size of B."""
    work = Workspace() if work is None else work
    s, d, w = bridge.shape
    c = bridged_protos.shape[1]
    n = unit_queries.shape[-2]
    if not _project_bridge_first(n, d, w):
        s3 = _cosines_through_z(unit_queries, bridge, gram, image_protos_w)
        return torch.matmul(unit_queries, bridged_protos.transpose(1, 2)), s3
    k = d
    rhs = work("selection_rhs", (s, k + 2 * c, d), bridge)                              # stacks, transposed
    torch.matmul(text_projection.T, bridge.transpose(1, 2), out=rhs[:, :k])
    torch.matmul(image_protos_w, bridge.transpose(1, 2), out=rhs[:, k:k + c])
    rhs[:, k + c:] = bridged_protos
    if unit_queries.ndim == 2:
        flat = torch.mm(unit_queries, rhs.view(-1, d).T, out=work("selection_out", (n, s * (k + 2 * c)), bridge))
        out = flat.view(n, s, k + 2 * c).transpose(0, 1)
    else:
        out = torch.bmm(unit_queries, rhs.transpose(1, 2), out=work("selection_out", (s, n, k + 2 * c), bridge))
    norm = out[..., :k].norm(dim=-1, keepdim=True)
    return out[..., k + c:], out[..., k:k + c].div_(torch.where(norm > 0, norm, 1.0))


def divergence(image_protos: Tensor, text_prototypes: Tensor) -> Tensor:
    """d [S, C]: d_c = log2((1+1e-6)/(p_cc+1e-6)), p = softmax(F̄ T̄ᵀ, dim=1)."""
    p = torch.softmax(image_protos @ text_prototypes.T, dim=-1).diagonal(dim1=-2, dim2=-1)
    return torch.log2((1 + 1e-6) / (p + 1e-6))


def blend_logits(maps: Maps, div: Tensor, params: Tensor) -> Tensor:
    """Blended logits [S, M, N, C] for blend candidates params [S, M, 7] = (s, α, β, γ, λ1, λ2, λ3).

    logits = λ1·exp(−α(1−S1)) + w ⊙ (λ2·exp(−β(1−S2)) + λ3·exp(−γ(1−S3))),  w_c = exp(s·d_c),
    evaluated as exp(α·S1 + log λ1 − α) + exp(β·S2 + s·d + log λ2 − β) + exp(γ·S3 + s·d + log λ3 − γ):
    one fused multiply-add and one in-place exp per term over the big [S, M, N, C] tensor.
    """
    return blend_exponent_logits(maps, div.unsqueeze(1), params)


def blend_exponent_logits(maps: Maps, div: Tensor, params: Tensor) -> Tensor:
    """blend_logits for maps [S, N, K] of any last size K and per-entry divergence div [S, 1|N, K]."""
    s, alpha, beta, gamma, l1, l2, l3 = (params[..., i, None, None] for i in range(7))
    # log λ of λ = 0 is −inf; a large finite negative keeps exp() exactly 0 without inf arithmetic
    log = lambda lam: torch.log(lam).clamp_min(-1e4)  # noqa: E731
    sd = s * div.unsqueeze(1)                                                           # [S, M, 1|N, K]
    out = torch.addcmul(log(l1) - alpha, alpha, maps.s1.unsqueeze(1)).exp_()
    out += torch.addcmul(sd + (log(l2) - beta), beta, maps.s2.unsqueeze(1)).exp_()
    out += torch.addcmul(sd + (log(l3) - gamma), gamma, maps.s3.unsqueeze(1)).exp_()
    return out


def _log_weight(lam: float) -> float:
    """log λ, with blend_exponent_logits' floor of −1e4 (λ = 0 keeps exp() exactly 0)."""
    return max(math.log(lam), -1e4) if lam > 0 else -1e4


class FixedBlend:
    """Validation accuracy under one fixed blend when only S2 and S3 change (SeMoBridge-T's per-step model
    selection): the prior term λ1·exp(α(S1−1)) and the class weights w = exp(s·d) are computed once.

    s1 [S, N, C], div [S, C], labels [S, N] (−1 ignored), params the 7 blend values (default FIXED_BLEND).
    `accuracy(s2, s3)` equals ops.accuracy(blend_logits(Maps(s1, s2, s3), div, params)) up to rounding
    (same exponent form: exp(β·S2 + s·d + log λ2 − β), ...).
    """

    def __init__(self, s1: Tensor, div: Tensor, labels: Tensor, params=FIXED_BLEND):
        s, alpha, self.beta, self.gamma, l1, l2, l3 = (float(x) for x in params)
        self.prior = (alpha * s1).add_(_log_weight(l1) - alpha).exp_()                  # [S, N, C]
        sd = (s * div).unsqueeze(1)                                                      # [S, 1, C]
        self.offset2, self.offset3 = sd + (_log_weight(l2) - self.beta), sd + (_log_weight(l3) - self.gamma)
        self.labels = labels.expand(max(s1.shape[0], div.shape[0], labels.shape[0]), -1)   # [S, N]
        self.valid = self.labels >= 0
        self.count = self.valid.sum(-1).clamp_min(1).to(s1.dtype)
        self._logits = self._term = None                                                # reused buffers

    def accuracy(self, s2: Tensor, s3: Tensor) -> Tensor:
        """[S] top-1 accuracy in percent."""
        if self._logits is None or self._logits.shape != s2.shape:
            self._logits, self._term = (torch.empty(s2.shape, dtype=s2.dtype, device=s2.device) for _ in "lt")
        logits = torch.add(self.offset2, s2, alpha=self.beta, out=self._logits).exp_().add_(self.prior)
        logits += torch.add(self.offset3, s3, alpha=self.gamma, out=self._term).exp_()   # blend_logits' order
        hit = self._argmax_is_label(logits) & self.valid
        return 100.0 * hit.sum(-1).to(self.count.dtype) / self.count

    def _argmax_is_label(self, logits: Tensor) -> Tensor:
        """logits.argmax(-1) == labels (bool [S, N]) without argmax's slow CPU kernel: the label's logit
        against the largest other one (set aside in place); a tie or a NaN anywhere falls back to argmax."""
        index = self.labels.clamp_min(0).unsqueeze(-1)
        own = logits.gather(-1, index)
        other = logits.scatter_(-1, index, float("-inf")).amax(-1, keepdim=True)
        if not bool(((own > other) | (own < other)).all()):
            return logits.scatter_(-1, index, own).argmax(-1) == self.labels
        return (own > other).squeeze(-1)


# ------------------------------------------------------------------------------------------------ utils
def _class_biased(u: Tensor, bias: Tensor | None, labels: Tensor) -> Tensor:
    """u [S, C·K', W] + bias of each row's class (bias [S, C, W]); u unchanged without a bias."""
    if bias is None:
        return u
    s, n, w = u.shape
    c = bias.shape[1]
    return (u.reshape(s, c, n // c, w) + bias.unsqueeze(2)).reshape(s, n, w)


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Σ over the last dim of a ⊙ b, keepdim."""
    return (a * b).sum(-1, keepdim=True)


def safe_norm(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """‖x‖ over the last dim, keepdim; 1 where the norm is 0 or the row (mask [...]) is masked out (no NaN)."""
    norm = x.norm(dim=-1, keepdim=True)
    keep = norm > 0
    if mask is not None:
        keep = keep & mask.unsqueeze(-1)
    return torch.where(keep, norm, torch.ones_like(norm))


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)
