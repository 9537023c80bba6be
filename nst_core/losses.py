"""The three loss terms of Gatys et al.: content, style (Gram matrices) and total variation.

Each term is normalised by the size of its own target, so one set of weights gives the same balance at every image
size, on every layer and with either weight source:

    content = sum_l w_l * ||F_l(x) - F_l(c)||^2 / ||F_l(c)||^2
    style   = sum_l v_l * ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2,  G_l = F_l F_l^T / (H_l W_l)
    tv      = mean((x[i+1, j] - x[i, j])^2) + mean((x[i, j+1] - x[i, j])^2)   on 0..1 RGB pixels

with layer weights w, v normalised to sum 1. Grams and losses are always computed in float32, also when the
convolutions run in bf16/fp16 (fp16 Grams overflow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["ContentLoss", "StyleLoss", "gram", "normalised", "tv_loss"]


def normalised(weights: Sequence[float] | None, count: int) -> list[float]:
    """Weights scaled to sum 1 (equal weights when None)."""
    if weights is None:
        return [1.0 / count] * count
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix (N, C, C) of (N, C, H, W) features, averaged over positions, in float32."""
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


class ContentLoss:
    """Relative squared feature distance to the content image's features at the content layers."""

    def __init__(self, targets: Mapping[str, torch.Tensor], weights: Sequence[float] | None = None) -> None:
        self.layers = tuple(targets)
        self.targets = {k: v.detach().float() for k, v in targets.items()}
        self.norms = {k: v.pow(2).sum().clamp_min(1e-12) for k, v in self.targets.items()}
        self.weights = normalised(weights, len(self.layers))

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = features[self.layers[0]].new_zeros((), dtype=torch.float32)
        for layer, weight in zip(self.layers, self.weights, strict=True):
            diff = features[layer].float() - self.targets[layer]
            total = total + weight * diff.pow(2).sum() / self.norms[layer]
        return total


class StyleLoss:
    """Relative squared Gram distance to a (blended) style target at the style layers."""

    def __init__(self, target_grams: Mapping[str, torch.Tensor], weights: Sequence[float] | None = None) -> None:
        self.layers = tuple(target_grams)
        self.targets = {k: v.detach().float() for k, v in target_grams.items()}
        self.norms = {k: v.pow(2).sum().clamp_min(1e-12) for k, v in self.targets.items()}
        self.weights = normalised(weights, len(self.layers))

    @staticmethod
    def blend(grams: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Weighted sum of several styles' Gram targets (weights already normalised)."""
        return {layer: sum((w * g[layer] for g, w in zip(grams, weights, strict=True)), torch.zeros_like(
            grams[0][layer])) for layer in grams[0]}

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = features[self.layers[0]].new_zeros((), dtype=torch.float32)
        for layer, weight in zip(self.layers, self.weights, strict=True):
            diff = gram(features[layer]) - self.targets[layer]
            total = total + weight * diff.pow(2).sum() / self.norms[layer]
        return total


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of an (N, 3, H, W) image in 0..1: mean squared difference of neighbours."""
    image = image.float()
    dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).mean()
    dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).mean()
    return dx + dy
