"""How well probabilities are calibrated, on labelled queries, accumulated chunk by chunk:

    tally = CalibrationTally(num_classes=C)
    for probabilities, labels in chunks:           # [n, C] rows summing to 1, [n] int
        tally.update(probabilities, labels)
    tally.result()    # {"ece", "nll", "brier", "confidence", "accuracy", "bins": {...}}

- ECE: expected calibration error, 15 equal-width bins of the top-1 confidence, L1 (Guo et al., 2017, §2;
  torchmetrics' MulticlassCalibrationError computes it);
- NLL: mean −log p(true class) (probabilities floored at 1e-12);
- Brier: mean over queries of Σ_c (p_c − [c = y])², the multiclass Brier score (Brier, 1950), in [0, 2];
- confidence: the mean top-1 probability, to set beside the accuracy (their gap is what ECE refines);
- bins: per bin of the top-1 confidence ([0, 1/15), ..., [14/15, 1]) the query count and mean confidence and
  accuracy, the points of a reliability diagram (evaluate/reporting/reliability.py).
torchmetrics has no multiclass NLL or Brier score, hence the two sums here.
"""
from __future__ import annotations

import torch
from torch import Tensor

ECE_BINS = 15
PROBABILITY_FLOOR = 1e-12


class CalibrationTally:
    """Running sums over chunks of (probabilities [n, C], labels [n]) of one set of probabilities."""

    def __init__(self, num_classes: int, bins: int = ECE_BINS) -> None:
        from torchmetrics.classification import MulticlassCalibrationError

        # sync_on_compute False: under torchrun a torchmetrics Metric would otherwise gather every rank's
        # queries into this tally (each bench rank scores its own cells)
        self.ece = MulticlassCalibrationError(num_classes=num_classes, n_bins=bins, norm="l1", sync_on_compute=False)
        self.bins = bins
        self.count = 0
        self.nll_sum = self.brier_sum = self.confidence_sum = self.correct = 0.0
        self.bin_count = torch.zeros(bins, dtype=torch.float64)
        self.bin_confidence = torch.zeros(bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(bins, dtype=torch.float64)

    def update(self, probabilities: Tensor, labels: Tensor) -> None:
        """Add queries: probabilities [n, C] (rows sum to 1), labels [n] int64 in [0, C)."""
        p = probabilities.detach().double().cpu()
        y = labels.detach().long().cpu()
        true = p.gather(1, y[:, None])[:, 0]
        confidence, predicted = p.max(1)
        hit = (predicted == y).double()
        self.ece.update(p.float(), y)
        self.count += int(y.numel())
        self.nll_sum += float(-true.clamp_min(PROBABILITY_FLOOR).log().sum())
        self.brier_sum += float(((p ** 2).sum(1) - 2 * true + 1).sum())
        self.confidence_sum += float(confidence.sum())
        self.correct += float(hit.sum())
        index = (confidence * self.bins).long().clamp(0, self.bins - 1)
        self.bin_count.index_add_(0, index, torch.ones_like(confidence))
        self.bin_confidence.index_add_(0, index, confidence)
        self.bin_correct.index_add_(0, index, hit)

    def result(self) -> dict:
        """ece, nll, brier, confidence (mean top-1 probability), accuracy (fraction) and the reliability bins
        (count, confidence, accuracy per bin; null where a bin is empty), as plain floats."""
        if self.count == 0:
            raise ValueError("no query was added")
        filled = self.bin_count > 0
        mean = lambda total: [round(float(v), 6) if f else None
                              for v, f in zip(total / self.bin_count.clamp_min(1), filled)]
        return {"ece": float(self.ece.compute()), "nll": self.nll_sum / self.count,
                "brier": self.brier_sum / self.count, "confidence": self.confidence_sum / self.count,
                "accuracy": self.correct / self.count,
                "bins": {"count": [int(c) for c in self.bin_count], "confidence": mean(self.bin_confidence),
                         "accuracy": mean(self.bin_correct)}}
