"""SeMoBridge-T's training loss (METHOD.md §3) and its gradient derived by hand, for S seeds at once.

`loss_problem` holds what never changes during training, `loss_forward` gives the five losses and the
bridged prototypes of a state, `loss_backward` their summed gradient; `trained_losses` wraps them for
autograd users (the parity check). The bridge algebra itself is in bridge.methods.semobridge.algebra.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clipbridge.bridge.methods.semobridge.algebra import (AffineHead, WeightedViews, Workspace, bridge_input,
                                                          homogeneous, rowdot, safe_norm)

LOSS_WEIGHTS = {"img": 0.5, "txtp": 0.25, "txte": 0.25, "cons": 0.1, "bias": 0.1}

# The gradient by hand: one forward and one backward pass touch each [S, N, W] tensor a few times and
# autograd records nothing. Notation (per seed; N = C·K' class-major support views x_k of class y_k,
# padded rows are zero and carry zero weight):
#   u_k = x_k B + b_{y_k}           r_k = ‖u_k‖            ρ_k = w_k / r_k  (w_k: the class-mean weight)
#   ē_c = Σ_{k∈c} ρ_k u_k           z_c = ‖ē_c Wt‖         Ê = ē / z        P = Ê Wt = n(ē Wt)
#   v_k = u_k G  (G = Wt Wtᵀ)       s_k = ‖u_k Wt‖ = √(u_k·v_k)            U = n(ē)
# and every logit is a product with Ê, so no product with Wt touches an [N, ·] tensor:
#   img  τ n(x_k)·P_c = (τ n(x_k) Wtᵀ)·Ê_c        cons  n(u_k Wt)·P_c = v_k·Ê_c / s_k
#   txtp P_c·T̄_j = Ê_c·(T̄_j Wtᵀ)                txte  U_c·Ē_j
#
# Affine projection t = e Wt + b, b [D] (algebra's docstring; b_{y_k} above stays the class bias):
#   u_k = (x_k − b) B + b_{y_k},  x̂_k = ℓ n(u_k) Wt + b.
# In homogeneous coordinates ũ_k = [u_k, r_k/ℓ], ẽ_c = [ē_c, 1/ℓ] with W̃t = [Wt; b], G̃ = W̃t W̃tᵀ:
#   n(x̂_k) = n(ũ_k W̃t),  P_c = n(ẽ_c W̃t),  so with ṽ_k = ũ_k G̃, s̃_k = √(ũ_k·ṽ_k), z_c = ‖ẽ_c W̃t‖,
#   Ê_c = ẽ_c / z_c (now W+1 long) the four logits are the formulas above with W̃t for Wt, G̃ for G:
#   img  (τ n(x_k) W̃tᵀ)·Ê_c     cons ṽ_k·Ê_c / s̃_k     txtp Ê_c·(T̄_j W̃tᵀ)     txte U_c·Ē_j (U = n(ē): EOS space)
# and the same backward gives ∂/∂ũ_k and ∂/∂ẽ_c. Back to u and ē: ẽ's last entry 1/ℓ is a constant (its
# gradient is dropped); ũ's last entry r_k/ℓ = ‖u_k‖/ℓ has ∂/∂u_k = u_k/(r_k ℓ), so
#   ∂L/∂u_k = (∂L/∂ũ_k)[:W] + (∂L/∂ũ_k)[W] · u_k / (r_k ℓ),
# and ∂L/∂B = Σ_k (x_k − b)ᵀ ∂L/∂u_k. The class bias and the bias loss are unchanged. With b = 0 the linear
# code runs (LossProblem.affine is None): the same operations as before, bit for bit.
class LossProblem(NamedTuple):
    """The step-invariant inputs of SeMoBridge-T's loss (built once by `loss_problem`).

    raw [S, N, D] support views X (the bridge's input: X − b with an affine projection); image_text
    [S, N, W] = τ·n(X) Wtᵀ; labels [N]; classes [C] = 0..C−1; mask [N] bool; class_weight [N, 1] =
    1/(real views of the class), 0 on padding; view_weight [N] = 1/(real views), 0 on padding; text_w
    [C, W] = T̄ Wtᵀ; text_eos Ē [C, W]; text_projection Wt [W, D]; gram G [W, W]; affine the AffineHead of
    an affine projection, None for a linear one: then image_text, text_w, text_projection and gram hold
    W̃t = [Wt; b] in place of Wt (W+1 columns / rows).
    """

    raw: Tensor
    image_text: Tensor
    labels: Tensor
    classes: Tensor
    mask: Tensor
    class_weight: Tensor
    view_weight: Tensor
    text_w: Tensor
    text_eos: Tensor
    text_projection: Tensor
    gram: Tensor
    affine: AffineHead | None = None


def loss_problem(views: WeightedViews, text_prototypes: Tensor, text_eos: Tensor, text_projection: Tensor,
                 logit_scale: float, gram: Tensor | None = None, affine: AffineHead | None = None) -> LossProblem:
    """LossProblem of support views, T̄ [C, D], Ē [C, W], Wt [W, D], τ and G = Wt Wtᵀ (formed if None),
    and the AffineHead of an affine projection (None: linear). Costs one [S·N, D]×[D, W] product."""
    if affine is not None:
        text_projection, gram = affine.projection, affine.gram
    gram = text_projection @ text_projection.T if gram is None else gram
    mask = views.mask
    view_weight = mask.to(views.raw.dtype) / mask.sum().clamp_min(1)
    classes = torch.arange(text_eos.shape[0], device=mask.device)
    return LossProblem(bridge_input(views.raw, affine, mask), (logit_scale * views.unit) @ text_projection.T,
                       views.labels, classes, mask, views.weight.unsqueeze(-1), view_weight,
                       text_prototypes @ text_projection.T, text_eos, text_projection, gram, affine)


class _Saved(NamedTuple):
    """loss_forward's intermediates for loss_backward ([S, N, ·] per view, [S, C, ·] per class); with an
    affine projection v, s, ehat and z are those of ũ and ẽ (W+1 long), u stays [S, N, W]."""

    u: Tensor               # [S, N, W]
    v: Tensor               # u G [S, N, W]
    r: Tensor               # ‖u‖ [S, N, 1] (1 on padding)
    rho: Tensor             # w / r [S, N, 1]
    s: Tensor               # ‖u Wt‖ [S, N, 1] (1 on padding)
    ehat: Tensor            # Ê [S, C, W]
    z: Tensor               # ‖ē Wt‖ [S, C, 1]
    unit_eos: Tensor        # U [S, C, W]
    e: Tensor               # ‖ē‖ [S, C, 1]
    log_probs: dict         # log-softmax of each loss's logits: img, cons [S, N, C]; txtp, txte [S, C, C]
    cons_logits: Tensor     # [S, N, C]


class LossForward(NamedTuple):
    """Per-seed losses [S] (img, txtp, txte, cons, bias, total), the bridged prototypes P [S, C, D], and
    what loss_backward reuses."""

    losses: dict[str, Tensor]
    prototypes: Tensor
    saved: _Saved


def loss_forward(problem: LossProblem, bridge: Tensor, bias: Tensor | None,
                 work: Workspace | None = None) -> LossForward:
    """SeMoBridge-T's five losses for bridge [S, D, W] and class bias [S, C, W] (or None), no autograd;
    [S, N, W] tensors go to `work`'s buffers (fresh ones when None).
    Cost per seed: two [N, D|W]×[·, W] products (u = X B, v = u G) and two [N, W]×[W, C] (the logits)."""
    work = Workspace() if work is None else work
    p = problem
    s, n, _ = p.raw.shape
    c, w = p.text_eos.shape
    u = torch.bmm(p.raw, bridge, out=work("u", (s, n, w), bridge))                     # [S, N, W]
    if bias is not None:
        u.view(s, c, -1, w).add_(bias.unsqueeze(2))
    r = safe_norm(u, p.mask)
    rho = p.class_weight / r
    mean_eos = _class_combine(rho, u, c)                                                # ē [S, C, W]
    uh, mean_h = u, mean_eos                                                            # ũ, ẽ (affine)
    if p.affine is not None:
        uh, mean_h = homogeneous(u, r, p.affine.eos_length), homogeneous(mean_eos, 1.0, p.affine.eos_length)
    wh = uh.shape[-1]
    v = torch.mm(uh.view(-1, wh), p.gram, out=work("v", (s * n, wh), u)).view(s, n, wh)
    uv = torch.mul(uh, v, out=work("scratch", uh.shape, u)).sum(-1, keepdim=True)      # u·v = ‖u Wt‖²
    view_norm = torch.where(p.mask.unsqueeze(-1), uv, 1.0).sqrt_()                      # s [S, N, 1]
    projected = mean_h @ p.text_projection                                              # ē Wt [S, C, D]
    z = projected.norm(dim=-1, keepdim=True)
    ehat = mean_h / z
    e = mean_eos.norm(dim=-1, keepdim=True)
    unit_eos = mean_eos / e
    ehat_t = ehat.transpose(1, 2)
    per_view = (s, n, c)                        # the [S, N, C] tensors go to buffers: 64 MB each at C = 1,000
    cons_logits = torch.bmm(v, ehat_t, out=work("cons_logits", per_view, u)).div_(view_norm)
    losses, log_probs = {}, {}
    for name, logits, labels, weight in (
            ("img", torch.bmm(p.image_text, ehat_t, out=work("img_logits", per_view, u)), p.labels, p.view_weight),
            ("txtp", ehat @ p.text_w.T, p.classes, 1.0 / c),
            ("txte", unit_eos @ p.text_eos.T, p.classes, 1.0 / c),
            ("cons", cons_logits, p.labels, p.view_weight)):
        out = work(f"{name}_log_probs", logits.shape, u) if logits.shape == per_view else None
        log_probs[name] = torch.log_softmax(logits, -1, out=out)
        losses[name] = _weighted_nll(log_probs[name], labels, weight)
    losses["bias"] = _bias_loss(bias, u)
    losses["total"] = sum(LOSS_WEIGHTS[k] * v for k, v in losses.items())
    saved = _Saved(u, v, r, rho, view_norm, ehat, z, unit_eos, e, log_probs, cons_logits)
    return LossForward(losses, projected / z, saved)


def loss_backward(problem: LossProblem, forward: LossForward, bias: Tensor | None,
                  work: Workspace | None = None) -> tuple[Tensor, Tensor | None]:
    """Gradients of Σ_seeds total loss w.r.t. bridge [S, D, W] and bias [S, C, W] (None without a bias);
    the [S, N, W] one and the bridge's go to `work`'s buffers (fresh ones when None).
    Cost per seed: one [D, N]×[N, W] product (Xᵀ ∂u) and three [·, N]×[N|C, ·] ones of width C."""
    work = Workspace() if work is None else work
    p, f = problem, forward.saved
    s, n, w = f.u.shape
    c = f.ehat.shape[1]
    img = _ce_grad(f.log_probs["img"], p.labels, LOSS_WEIGHTS["img"] * p.view_weight,
                   work("img_grad", f.log_probs["img"].shape, f.u))
    cons = _ce_grad(f.log_probs["cons"], p.labels, LOSS_WEIGHTS["cons"] * p.view_weight,
                    work("cons_grad", f.log_probs["cons"].shape, f.u)).div_(f.s)                    # ∂/∂(v Êᵀ)
    txtp = _ce_grad(f.log_probs["txtp"], p.classes, LOSS_WEIGHTS["txtp"] / c)
    txte = _ce_grad(f.log_probs["txte"], p.classes, LOSS_WEIGHTS["txte"] / c)
    # per class: Ê = ē / ‖ē Wt‖ (∂‖ē Wt‖/∂ē = Ê G) and U = ē / ‖ē‖
    grad_ehat = torch.bmm(img.transpose(1, 2), p.image_text).baddbmm_(cons.transpose(1, 2), f.v)
    grad_ehat += txtp @ p.text_w
    ehat_gram = f.ehat @ p.gram
    grad_mean = (grad_ehat - rowdot(grad_ehat, f.ehat) * ehat_gram) / f.z
    if p.affine is not None:
        grad_mean = grad_mean[..., :w]                                                  # ẽ's 1/ℓ is constant
    grad_unit = txte @ p.text_eos
    grad_mean += (grad_unit - rowdot(grad_unit, f.unit_eos) * f.unit_eos) / f.e
    # per view: through v = u G (cons numerators), s = √(u·v) (cons norms), ē = Σ ρ u (ρ = w/‖u‖)
    grad_u = torch.bmm(cons, ehat_gram, out=work("grad_u", f.v.shape, f.u))
    cons_dot = torch.mul(cons, f.cons_logits, out=work("cons_product", cons.shape, f.u)).sum(-1, keepdim=True)
    grad_u.addcmul_(f.v, cons_dot.div_(f.s).neg_())                                    # rowdot, in a buffer
    if p.affine is not None:                                                            # ũ = [u, ‖u‖/ℓ]
        grad_u = grad_u[..., :w] + grad_u[..., w:] * f.u / (f.r * p.affine.eos_length)
    along_u = _class_combine(grad_mean, f.u, c, transpose=True)                        # ∂ē_{y_k}·u_k
    grad_u.addcmul_(f.u, along_u.mul_(f.rho).div_(f.r * f.r).neg_())
    grad_u.view(s, c, -1, w).addcmul_(grad_mean.unsqueeze(2), f.rho.view(s, c, -1, 1))
    grad_bridge = torch.bmm(p.raw.transpose(1, 2), grad_u, out=work("grad_bridge", (s, p.raw.shape[2], w), f.u))
    if bias is None:
        return grad_bridge, None
    return grad_bridge, grad_u.view(s, c, -1, w).sum(2) + _bias_loss_grad(bias)


class _TotalLoss(torch.autograd.Function):
    """The total loss [S] as an autograd node whose backward is loss_backward (scaled per seed)."""

    @staticmethod
    def forward(ctx, bridge: Tensor, bias: Tensor | None, problem: LossProblem, fwd: LossForward) -> Tensor:
        ctx.problem, ctx.fwd, ctx.bias = problem, fwd, bias
        return fwd.losses["total"].clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_bridge, grad_bias = loss_backward(ctx.problem, ctx.fwd, ctx.bias)
        scale = grad[:, None, None]
        return grad_bridge * scale, None if grad_bias is None else grad_bias * scale, None, None


class TrainedForward(NamedTuple):
    """Per-seed losses [S] (img, txtp, txte, cons, bias, total) and the bridged prototypes P [S, C, D]."""

    losses: dict[str, Tensor]
    prototypes: Tensor


def trained_losses(views: WeightedViews, bridge: Tensor, bias: Tensor | None, text_prototypes: Tensor,
                   text_eos: Tensor, text_projection: Tensor, gram: Tensor, logit_scale: float,
                   affine: AffineHead | None = None) -> TrainedForward:
    """SeMoBridge-T's five losses (METHOD.md §3) for bridge [S, D, W] and class bias [S, C, W] (or None).

    text_prototypes T̄ [C, D], text_eos Ē [C, W], gram = Wt Wtᵀ [W, W], logit_scale τ, affine the
    AffineHead of an affine projection (None: linear). Padded views are excluded from every mean.
    losses["total"] backpropagates to bridge and bias (by loss_backward); the other entries carry no
    gradient. A training loop should build the LossProblem once and call loss_forward / loss_backward itself.
    """
    problem = loss_problem(views, text_prototypes, text_eos, text_projection, logit_scale, gram, affine)
    detached = None if bias is None else bias.detach()
    fwd = loss_forward(problem, bridge.detach(), detached)
    losses = dict(fwd.losses)
    if torch.is_grad_enabled() and (bridge.requires_grad or (bias is not None and bias.requires_grad)):
        losses["total"] = _TotalLoss.apply(bridge, bias, problem, fwd)
    return TrainedForward(losses, fwd.prototypes)


def _class_combine(weight: Tensor, rows: Tensor, num_classes: int, transpose: bool = False) -> Tensor:
    """Per-class products of class-major rows [S, C·K', W]:
    Σ_k weight_k rows_k [S, C, W] for weight [S, C·K', 1]; with transpose, rows_k·weight_{y_k} [S, C·K', 1]
    for per-class weight [S, C, W]."""
    s, n, w = rows.shape
    blocks = rows.view(s * num_classes, n // num_classes, w)
    if transpose:
        return torch.bmm(blocks, weight.reshape(s * num_classes, w, 1)).view(s, n, 1)
    return torch.bmm(weight.reshape(s * num_classes, 1, -1), blocks).view(s, num_classes, w)


def _weighted_nll(log_probs: Tensor, labels: Tensor, weight: Tensor | float) -> Tensor:
    """Σ_k weight_k (−log_probs[s, k, labels_k]) per seed: log_probs [S, N, C], labels [N], weight [N] or a
    number -> [S]."""
    picked = log_probs.gather(-1, labels.expand(log_probs.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    return -(picked * weight).sum(-1)


# log-probabilities below this have probabilities under float32's smallest normal (1.2e-38): exp() of them
# takes the CPU's slow out-of-range path (10x the time of the whole tensor's exp on AVX2), and their share of
# a softmax gradient is below any float32 rounding of the other entries.
LOG_PROB_FLOOR = -87.3


def _ce_grad(log_probs: Tensor, labels: Tensor, weight: Tensor | float, out: Tensor | None = None) -> Tensor:
    """∂ Σ_k weight_k CE_k / ∂logits = weight_k (softmax_k − onehot(labels_k)) [S, N, C] (into `out` when
    given); probabilities under exp(LOG_PROB_FLOOR) ≈ 1.2e-38 are taken as that value (an absolute change
    below 1.2e-38)."""
    grad = torch.clamp(log_probs, min=LOG_PROB_FLOOR, out=out).exp_()
    rows = torch.arange(labels.numel(), device=labels.device)
    grad[:, rows, labels] -= 1
    return grad.mul_(weight.unsqueeze(-1) if isinstance(weight, Tensor) else weight)


def _bias_loss(bias: Tensor | None, like: Tensor) -> Tensor:
    """mean_c (‖b_c‖ − mean_j ‖b_j‖)² per seed [S]; zeros without a bias."""
    if bias is None:
        return torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
    norms = bias.norm(dim=-1)
    return ((norms - norms.mean(-1, keepdim=True)) ** 2).mean(-1)


def _bias_loss_grad(bias: Tensor) -> Tensor:
    """∂(weight · _bias_loss)/∂bias [S, C, W] (the mean's term cancels; 0 where ‖b_c‖ = 0)."""
    norms = bias.norm(dim=-1, keepdim=True)
    scale = (2 * LOSS_WEIGHTS["bias"] / bias.shape[1]) * (norms - norms.mean(1, keepdim=True))
    return bias * torch.where(norms > 0, scale / norms, torch.zeros_like(norms))
