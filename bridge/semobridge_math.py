"""SeMoBridge's tensor algebra (METHOD.md §2–3): pure functions, no state, no I/O.

Shapes: S seeds, C classes, K' support views per class, N queries, M blend candidates, D joint size,
W text width. `B` is the bridge [D, W] (shared) or [S, D, W] (per seed); `bias` is [S, C, W] or None.

The bridge of a raw embedding x with class bias b:  u = x B + b,  ê = ℓ n(u),  x̂ = ê Wt.
Two identities keep the hot paths cheap and are used everywhere (so the parity check covers them):
  n(x̂) = n(u Wt)                      (ℓ and ‖u‖ are positive scalars per row)
  P_c  = n(mean_k x̂_k) = n(ē_c Wt)    with ē_c = mean_k n(u_k)   (Wt applied after the mean)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bridge.errors import BridgeInputError

PINV_ATOL = 0.3          # absolute singular-value cut of B0 = pinv(Wt); rtol = 0
BLEND_PARAMS = ("s", "alpha", "beta", "gamma", "lambda1", "lambda2", "lambda3")
BLEND_LOW = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
BLEND_HIGH = (1.5, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0)
FIXED_BLEND = (0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)   # SeMoBridge-T's model-selection blend
LOSS_WEIGHTS = {"img": 0.5, "txtp": 0.25, "txte": 0.25, "cons": 0.1, "bias": 0.1}


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
                 bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bridged embeddings x̂ [..., D] and pseudo EOS tokens ê [..., W] of raw x [..., D].

    bias, when given, is added to x B before normalising; it must broadcast to [..., W] (for support
    [S, C, K', D] pass bias[:, :, None, :]).
    """
    u = apply_bridge(x, bridge)
    if bias is not None:
        u = u + bias
    eos = eos_length * _normalize(u)
    return eos @ text_projection, eos


# ------------------------------------------------------------------------------------------- prototypes
class SupportViews(NamedTuple):
    """Support views flattened class-major, padded views zeroed.

    raw [S, C·K', D], unit [S, C·K', D] = n(raw), labels [C·K'], mask [C·K'] bool,
    weight [C·K'] = mask / (real views of the view's class): a masked class mean is a weighted sum.
    """

    raw: Tensor
    unit: Tensor
    labels: Tensor
    mask: Tensor
    weight: Tensor


def support_views(support: Tensor, support_mask: Tensor) -> SupportViews:
    """SupportViews of support [S, C, K', D] with support_mask [C, K']."""
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
    return SupportViews(raw, unit, labels, mask, weight)


def class_sum(x: Tensor, weight: Tensor, num_classes: int) -> Tensor:
    """Σ_k weight_k x_k per class of class-major rows x [S, C·K', X], weight [C·K'] or [S, C·K'] -> [S, C, X]."""
    s = x.shape[0]
    weighted = x * weight.unsqueeze(-1)
    return weighted.reshape(s, num_classes, -1, x.shape[-1]).sum(2)


def image_prototypes(views: SupportViews, num_classes: int) -> Tensor:
    """F̄ [S, C, D] = n(mean of a class's raw views)."""
    return _normalize(class_sum(views.raw, views.weight, num_classes))


def bridged_prototypes(views: SupportViews, num_classes: int, bridge: Tensor, text_projection: Tensor,
                       bias: Tensor | None = None) -> Tensor:
    """P [S, C, D] = n(mean_k x̂(F[c,k]; b_c)) = n(mean_k n(u_k) Wt); bias [S, C, W] or None."""
    u = _class_biased(apply_bridge(views.raw, bridge), bias, views.labels)
    unit = u / safe_norm(u, views.mask)
    return _normalize(class_sum(unit, views.weight, num_classes) @ text_projection)


# ------------------------------------------------------------------------------------------------- maps
class Maps(NamedTuple):
    """The three cosine maps [S, N, C]: zero-shot prior, query vs bridged shots, bridged query vs shots."""

    s1: Tensor
    s2: Tensor
    s3: Tensor


def cosine_maps(queries: Tensor, text_prototypes: Tensor, image_protos: Tensor, bridged_protos: Tensor,
                bridge: Tensor, text_projection: Tensor) -> Maps:
    """S1 = q̄ T̄ᵀ, S2 = q̄ Pᵀ, S3 = n(x̂(q; 0)) F̄ᵀ for raw queries [S, N, D].

    text_prototypes T̄ [C, D]; image_protos F̄ [S, C, D]; bridged_protos P [S, C, D]. A zero query row (a
    padding row) gives zero cosines.
    """
    unit = queries / safe_norm(queries)
    s1 = unit @ text_prototypes.T
    s2 = unit @ bridged_protos.transpose(-1, -2)
    return Maps(s1, s2, bridged_query_cosines(queries, bridge, text_projection, image_protos))


def bridged_query_cosines(queries: Tensor, bridge: Tensor, text_projection: Tensor, image_protos: Tensor,
                          gram: Tensor | None = None) -> Tensor:
    """S3 [S, N, C] = n(x̂(q; 0)) F̄ᵀ = n(q B Wt) F̄ᵀ for raw queries [S, N, D], by the cheaper product order:
      y = q (B Wt):  D·W·D + N·D·D multiply-adds per seed;
      z = q B:       N·D·W + N·W·W (norm² = z·(z G), G = Wt Wtᵀ, given as `gram` or formed here),
                     numerator z (Wt F̄ᵀ)."""
    w, d = text_projection.shape
    n, c = queries.shape[-2], image_protos.shape[-2]
    gram_cost = 0 if gram is not None else w * w * d
    if d * w * d + n * d * d <= n * d * w + n * w * w + n * w * c + gram_cost + w * d * c:
        y = apply_bridge(queries, bridge @ text_projection)
        return (y / safe_norm(y)) @ image_protos.transpose(-1, -2)
    gram = text_projection @ text_projection.T if gram is None else gram
    z = apply_bridge(queries, bridge)
    numerator = z @ (text_projection @ image_protos.transpose(-1, -2))
    norm = ((z @ gram) * z).sum(-1, keepdim=True).clamp_min(0).sqrt()
    return numerator / torch.where(norm > 0, norm, torch.ones_like(norm))


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


class FixedBlend:
    """Validation accuracy under one fixed blend when only S2 and S3 change (SeMoBridge-T's per-step model
    selection): the prior term λ1·exp(α(S1−1)) and the class weights w = exp(s·d) are computed once.

    s1 [S, N, C], div [S, C], labels [S, N] (−1 ignored), params the 7 blend values (default FIXED_BLEND).
    `accuracy(s2, s3)` equals ops.accuracy(blend_logits(Maps(s1, s2, s3), div, params)) up to rounding.
    """

    def __init__(self, s1: Tensor, div: Tensor, labels: Tensor, params=FIXED_BLEND):
        s, alpha, self.beta, self.gamma, l1, self.l2, self.l3 = (float(x) for x in params)
        self.prior = l1 * torch.exp(alpha * (s1 - 1))
        self.weight = torch.exp(s * div).unsqueeze(1)                                    # [S, 1, C]
        self.labels, self.valid = labels, labels >= 0
        self.count = self.valid.sum(-1).clamp_min(1).to(s1.dtype)

    def accuracy(self, s2: Tensor, s3: Tensor) -> Tensor:
        """[S] top-1 accuracy in percent."""
        mixed = self.l2 * torch.exp(self.beta * (s2 - 1)) + self.l3 * torch.exp(self.gamma * (s3 - 1))
        logits = torch.addcmul(self.prior, self.weight, mixed)
        hit = (logits.argmax(-1) == self.labels) & self.valid
        return 100.0 * hit.sum(-1).to(self.count.dtype) / self.count


# --------------------------------------------------------------------------------------- trained losses
class _QuadNorm(torch.autograd.Function):
    """q = Σ_j v_j (v G)_j = ‖v L‖² for G = L Lᵀ symmetric; backward reuses v G (no second product)."""

    @staticmethod
    def forward(ctx, v: Tensor, gram: Tensor) -> Tensor:
        vg = v @ gram
        ctx.save_for_backward(vg)
        return (v * vg).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (vg,) = ctx.saved_tensors
        return 2 * grad.unsqueeze(-1) * vg, None


def quad_norm(v: Tensor, gram: Tensor) -> Tensor:
    """‖v Wt‖² per row of v [..., W] given gram = Wt Wtᵀ [W, W]."""
    return _QuadNorm.apply(v, gram)


class TrainedForward(NamedTuple):
    """Per-seed losses [S] (img, txtp, txte, cons, bias, total) and the bridged prototypes P [S, C, D]."""

    losses: dict[str, Tensor]
    prototypes: Tensor


def trained_losses(views: SupportViews, bridge: Tensor, bias: Tensor | None, text_prototypes: Tensor,
                   text_eos: Tensor, text_projection: Tensor, gram: Tensor, logit_scale: float) -> TrainedForward:
    """SeMoBridge-T's five losses (METHOD.md §3) for bridge [S, D, W] and class bias [S, C, W] (or None).

    text_prototypes T̄ [C, D], text_eos Ē [C, W], gram = Wt Wtᵀ [W, W], logit_scale τ. Padded views
    are excluded from every mean. Cost per seed: two [C·K', D|W]×[·, W] products forward, one backward.
    """
    num_classes = text_prototypes.shape[0]
    mask, labels = views.mask, views.labels
    u = _class_biased(apply_bridge(views.raw, bridge), bias, labels)                     # [S, N, W]
    unit = u / safe_norm(u, mask)
    mean_eos = class_sum(unit, views.weight, num_classes)                               # ē [S, C, W]
    protos = _normalize(mean_eos @ text_projection)                                      # P [S, C, D]
    eos_protos = _normalize(mean_eos)                                                    # U [S, C, W]
    classes = torch.arange(num_classes, device=labels.device)

    view_weight = mask.to(u.dtype) / mask.sum().clamp_min(1)
    img_logits = logit_scale * views.unit @ protos.transpose(-1, -2)                     # [S, N, C]
    # n(x̂_k)·P_c = (u_k Wt)·P_c / ‖u_k Wt‖
    sq = quad_norm(u, gram)
    sq = torch.where(mask, sq, torch.ones_like(sq))
    cons_logits = (u @ (text_projection @ protos.transpose(-1, -2))) / sq.sqrt().unsqueeze(-1)
    losses = {
        "img": _weighted_ce(img_logits, labels, view_weight),
        "txtp": _mean_ce(protos @ text_prototypes.T, classes),
        "txte": _mean_ce(eos_protos @ text_eos.T, classes),
        "cons": _weighted_ce(cons_logits, labels, view_weight),
        "bias": _bias_loss(bias, u),
    }
    losses["total"] = sum(LOSS_WEIGHTS[k] * v for k, v in losses.items())
    return TrainedForward(losses, protos)


def _bias_loss(bias: Tensor | None, like: Tensor) -> Tensor:
    """mean_c (‖b_c‖ − mean_j ‖b_j‖)² per seed [S]; zeros without a bias."""
    if bias is None:
        return torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
    norms = bias.norm(dim=-1)
    return ((norms - norms.mean(-1, keepdim=True)) ** 2).mean(-1)


def _weighted_ce(logits: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """Σ_k weight_k CE(logits[s, k], labels_k) per seed: logits [S, N, C], labels/weight [N] -> [S]."""
    nll = -torch.log_softmax(logits, -1).gather(-1, labels.expand(logits.shape[0], -1).unsqueeze(-1))
    return (nll.squeeze(-1) * weight).sum(-1)


def _mean_ce(logits: Tensor, labels: Tensor) -> Tensor:
    return _weighted_ce(logits, labels, torch.full_like(labels, 1.0 / labels.numel(), dtype=logits.dtype))


# ------------------------------------------------------------------------------------------------ utils
def _class_biased(u: Tensor, bias: Tensor | None, labels: Tensor) -> Tensor:
    """u [S, C·K', W] + bias of each row's class (bias [S, C, W]); u unchanged without a bias."""
    if bias is None:
        return u
    s, n, w = u.shape
    c = bias.shape[1]
    return (u.reshape(s, c, n // c, w) + bias.unsqueeze(2)).reshape(s, n, w)


def safe_norm(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """‖x‖ over the last dim, keepdim; 1 where the norm is 0 or the row (mask [...]) is masked out (no NaN)."""
    norm = x.norm(dim=-1, keepdim=True)
    keep = norm > 0
    if mask is not None:
        keep = keep & mask.unsqueeze(-1)
    return torch.where(keep, norm, torch.ones_like(norm))


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)
