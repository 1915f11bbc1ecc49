"""The gap analysis' figures (matplotlib, Agg; saved atomically by evaluate.reporting.plots.save_figure).

- cosine_hist_figure: per representation, histograms (densities) of the cosines of same-class and of
  different-class test-image pairs, as the SeMoBridge paper's Fig. 7; their means dashed, ROC-AUC in the title.
- embedding_map_figure: a 2-D projection of images, class texts and bridged images coloured by class, as
  CMM's Fig. 1. The projection is PCA (top two principal axes of all plotted points together, centred,
  by SVD), shared by every panel so that positions compare; each panel shows one representation's images
  (bridges also show the raw images faintly), the class texts T̄, CMM's learned prototypes where it has them,
  and the image and text centroids joined by a line (the centroid gap of the plotted classes). Classes are
  told apart by colour and marker (`class_styles`): a class whose name holds a colour word ("red", "blue
  square") is drawn in that colour, several of one colour by different markers, and no other class takes a
  colour that a plotted class's name says.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import Tensor

from clipbridge.bridge.threads import single_thread
from clipbridge.evaluate.analysis.measure import Measurement
from clipbridge.evaluate.analysis.representations import RAW, Representation
from clipbridge.evaluate.reporting.plots import pyplot

MAP_CLASSES = 8          # classes shown in the embedding map (evenly spaced over the class indices)
MAP_IMAGES_PER_CLASS = 40

# Colour words a class name may hold -> the colour drawn (white as light grey, so it shows on white).
COLOUR_WORDS = {
    "red": "#d62728", "blue": "#1f77b4", "green": "#2ca02c", "yellow": "#e6c619", "orange": "#ff7f0e",
    "purple": "#9467bd", "violet": "#9467bd", "pink": "#e377c2", "brown": "#8c564b", "cyan": "#17becf",
    "grey": "#7f7f7f", "gray": "#7f7f7f", "black": "#000000", "white": "#d0d0d0", "magenta": "#d61fd6",
    "olive": "#bcbd22", "navy": "#000080", "teal": "#008080", "gold": "#d4af37", "maroon": "#800000",
}
# Colours for the other classes, each with the colour words a reader might name it by: one is never used
# while a plotted class's name says one of its words.
OTHER_COLOURS = (("#1f77b4", ("blue",)), ("#ff7f0e", ("orange", "gold")), ("#2ca02c", ("green",)),
                 ("#d62728", ("red",)), ("#9467bd", ("purple", "violet", "magenta")), ("#8c564b", ("brown",)),
                 ("#e377c2", ("pink", "magenta")), ("#7f7f7f", ("grey", "gray")),
                 ("#bcbd22", ("olive", "yellow", "green")), ("#17becf", ("cyan", "teal", "blue")),
                 ("#000080", ("navy", "blue")), ("#008080", ("teal", "cyan", "green")),
                 ("#800000", ("maroon", "red", "brown")), ("#000000", ("black",)))
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
SAME_HUE = {"violet": "purple", "gray": "grey"}


def colour_word(name: str) -> str | None:
    """The first colour word (COLOUR_WORDS) of a class name, as a whole word in any case; None if none."""
    for word in re.findall(r"[a-z]+", name.lower()):
        if word in COLOUR_WORDS:
            return word
    return None


def class_styles(classnames: Sequence[str]) -> list[tuple[str, str]]:
    """(colour, marker) per class, in order: a class named after a colour gets that colour, the k-th class of one
    colour the k-th marker of CLASS_MARKERS; the others take OTHER_COLOURS in turn, skipping every colour a
    plotted class's name says or might be taken for (then markers repeat over the colours left; light grey
    when none is left)."""
    words = [colour_word(name) for name in classnames]
    said = {w for w in words if w}
    free = [colour for colour, names in OTHER_COLOURS if not said & set(names)] or ["#d0d0d0"]
    styles, seen, others = [], {}, 0
    for word in words:
        if word:
            hue = SAME_HUE.get(word, word)
            styles.append((COLOUR_WORDS[word], CLASS_MARKERS[seen.get(hue, 0) % len(CLASS_MARKERS)]))
            seen[hue] = seen.get(hue, 0) + 1
        else:
            styles.append((free[others % len(free)], CLASS_MARKERS[(others // len(free)) % len(CLASS_MARKERS)]))
            others += 1
    return styles


def _grid(count: int, width: float, height: float, share: bool = False):
    """A figure with `count` panels, at most 4 per row (shared axes when `share`)."""
    plt = pyplot()
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    return plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.8), squeeze=False,
                        sharex=share, sharey=share)


def cosine_hist_figure(measurements: Sequence[Measurement], bins: int = 60):
    """One panel per representation: density histograms of same-class and different-class pair cosines."""
    figure, axes = _grid(len(measurements), 4.2, 3.3)
    values = torch.cat([torch.cat([m.intra, m.inter]) for m in measurements]).double()
    low = float(values.min()) if values.numel() else -1.0
    edges = torch.linspace(min(low, 0.0), 1.0, bins + 1).tolist()
    for ax, m in zip(axes.flat, measurements):
        for cosines, label, colour in ((m.intra, "same class", "tab:green"), (m.inter, "different class", "tab:red")):
            if cosines.numel():
                ax.hist(cosines.double().numpy(), bins=edges, density=True, alpha=0.55, color=colour, histtype="stepfilled",
                        label=f"{label} ({cosines.numel():,} pairs)")
                ax.axvline(float(cosines.double().mean()), color=colour, linestyle="--", linewidth=1.2)
        ax.set_title(f"{m.name}  (ROC-AUC {m.row['roc_auc']:.3f})", fontsize=10)
        ax.set_xlabel("cosine of two test images")
        ax.set_ylabel("density")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(measurements):]:
        ax.axis("off")
    figure.tight_layout()
    return figure


def _map_subset(labels: Tensor, classes: int, per_class: int) -> tuple[list[int], Tensor]:
    """(up to `classes` class indices evenly spaced over those present, row indices [n] of up to
    `per_class` images of each, in analysis order)."""
    present = torch.unique(labels).tolist()
    picks = sorted({present[round(i * (len(present) - 1) / max(1, classes - 1))]
                    for i in range(min(classes, len(present)))})
    rows = torch.cat([(labels == c).nonzero().squeeze(-1)[:per_class] for c in picks])
    return picks, rows


def principal_axes(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mean [D], the top two principal axes [D, 2], their share of the variance [2]) of points [n, D]: the
    leading eigenvectors of the scatter matrix [D, D] (torch.linalg.eigh; signs as eigh returns them).

    eigh runs on one thread (bridge.threads.single_thread): a D × D eigendecomposition is hundreds of small
    parallel steps, and on a busy CPU every step's barrier waits for a descheduled thread (D = 512: 6.8 s on
    two threads of this project's shared 2-core VM under load, 0.08 s on one)."""
    mean = points.mean(0)
    centred = points - mean
    with single_thread():
        variance, vectors = torch.linalg.eigh(centred.T @ centred)                  # ascending
    return mean, vectors[:, [-1, -2]], variance[[-1, -2]] / variance.clamp_min(0).sum()


def embedding_map_figure(reps: Sequence[Representation], text: Tensor, labels: Tensor,
                         classnames: Sequence[str], classes: int = MAP_CLASSES,
                         per_class: int = MAP_IMAGES_PER_CLASS):
    """One panel per representation in one shared PCA plane: images [N, D] (labels [N]) coloured by class,
    class texts T̄ [C, D] as stars, CMM's learned prototypes as plus signs, centroids joined by a line."""
    plt = pyplot()
    picks, rows = _map_subset(labels.cpu(), classes, per_class)
    pick_index = torch.tensor(picks)
    plotted = lambda x: x.detach().float().cpu()  # noqa: E731   (float32 is plenty for a picture)
    text, images = plotted(text)[pick_index], [plotted(rep.images[rows]) for rep in reps]
    owns = [plotted(rep.own_text[pick_index]) if rep.own_text is not None else None for rep in reps]
    mean, axes2, share = principal_axes(torch.cat(images + [text] + [t for t in owns if t is not None]))
    project = lambda x: ((x - mean) @ axes2).numpy()  # noqa: E731
    style_of = dict(zip(picks, class_styles([str(classnames[c]) for c in picks])))
    shown_labels = labels.cpu()[rows]
    members = {c: (shown_labels == c).nonzero().squeeze(-1).numpy() for c in picks}
    text_colours = [style_of[c][0] for c in picks]
    raw = project(images[[rep.name for rep in reps].index(RAW)])
    stars = project(text)
    figure, axes = _grid(len(reps), 4.2, 4.0, share=True)
    for ax, rep, points, own in zip(axes.flat, reps, images, owns):
        shown = project(points)
        for c in picks:
            colour, marker = style_of[c]
            if rep.name != RAW:
                ax.scatter(raw[members[c], 0], raw[members[c], 1], s=7, color=colour, alpha=0.15, marker=marker,
                           linewidths=0)
            ax.scatter(shown[members[c], 0], shown[members[c], 1], s=11, color=colour, alpha=0.8, marker=marker,
                       linewidths=0)
        ax.scatter(stars[:, 0], stars[:, 1], s=140, c=text_colours, marker="*", edgecolors="black", linewidths=0.7)
        if own is not None:
            learned = project(own)
            ax.scatter(learned[:, 0], learned[:, 1], s=90, c=text_colours, marker="P", edgecolors="black",
                       linewidths=0.7)
        centres = project(torch.stack([points.mean(0), text.mean(0)]))
        ax.plot(centres[:, 0], centres[:, 1], color="black", linestyle="--", linewidth=1.0)
        ax.scatter(centres[:1, 0], centres[:1, 1], s=60, c="black", marker="X")
        ax.scatter(centres[1:, 0], centres[1:, 1], s=60, c="black", marker="*")
        ax.set_title(rep.name, fontsize=10)
        ax.set_xlabel(f"PC 1 ({100 * float(share[0]):.1f} % of variance)")
        ax.set_ylabel(f"PC 2 ({100 * float(share[1]):.1f} % of variance)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(reps):]:
        ax.axis("off")
    marker = lambda m, colour="grey", **kw: plt.Line2D([], [], linestyle="none", marker=m, color=colour,  # noqa: E731
                                                      markeredgecolor="black", **kw)
    handles = [marker("o", markeredgewidth=0), marker("o", alpha=0.3, markeredgewidth=0),
               marker("*", markersize=12), marker("X", "black"), plt.Line2D([], [], color="black", linestyle="--")]
    labels_text = ["test images (this representation)", "raw images (under a bridge)", "class text T̄",
                   "image centroid (★ black: text centroid)", "centroid gap"]
    if any(rep.own_text is not None for rep in reps):
        handles.append(marker("P", markersize=9))
        labels_text.append("CMM learned prototypes n(T)")
    handles += [marker(style_of[c][1], style_of[c][0], markeredgewidth=0, markersize=7) for c in picks]
    labels_text += [str(classnames[c]) for c in picks]
    figure.tight_layout()
    figure.legend(handles, labels_text, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, frameon=False,
                  fontsize=8)
    return figure
