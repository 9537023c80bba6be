"""One evaluation of a tiled level: the loss and gradient of the whole image, one tile's activations at a time.

The image being optimised stays whole (12 bytes a pixel, plus the optimiser's state). For each tile of the level's
`TileGrid` the network runs forward and backward on the tile's core and margin; only the core's feature positions
enter the feature terms (`FeatureLoss.partial`), and the tile's pixel gradient is added into the whole image's
gradient. Since the cores partition the level and each is seen with context, the sum over tiles is the whole-image
objective and its gradient, up to the context beyond a margin (measured at 256 px in 4 tiles: the same loss to
0.1 %, gradient cosine 0.999). The style term's gradient needs the image's whole Gram, so each evaluation first
runs a pass without gradients that sums it (`FeatureLoss.needs_prepass`): a third more time, no more memory.
Pixel terms (tv, temporal) are computed on the whole image at once.

The gradient being the whole image's, L-BFGS works on a tiled level as on a whole one; only its history grows with
the image (two float32 copies of it per step remembered), so `lbfgs_history` caps it to a memory budget and a
level too big for even a short history runs Adam (as crowsonkb/style-transfer-pytorch does at its largest scales).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nst_core.losses import Encoder, FeatureLoss, WeightedSum
from nst_core.tiles import TileGrid

__all__ = ["LBFGS_HISTORY_BYTES", "MIN_LBFGS_HISTORY", "TiledEvaluation", "lbfgs_history"]

#: What L-BFGS's remembered steps may take on a tiled level, and the shortest history worth running L-BFGS with.
LBFGS_HISTORY_BYTES = 1024**3
MIN_LBFGS_HISTORY = 5


def lbfgs_history(pixels: torch.Tensor, limit: int) -> int:
    """How many steps L-BFGS may remember for `pixels` within LBFGS_HISTORY_BYTES (at most `limit`); under
    MIN_LBFGS_HISTORY a level runs Adam instead (0)."""
    steps = min(limit, LBFGS_HISTORY_BYTES // (2 * pixels.numel() * pixels.element_size()))
    return steps if steps >= MIN_LBFGS_HISTORY else 0


class TiledEvaluation:
    """Loss and gradient of the whole image over a level's tiles (the gradient lands in `x.grad`)."""

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid

    def __call__(self, x: torch.Tensor, criterion: WeightedSum, encode: Encoder,
                 check_cancel: Callable[[], None]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = [(term, weight) for term, weight in criterion.terms if isinstance(term, FeatureLoss)]
        if any(term.needs_prepass for term, _ in features):
            with torch.no_grad():
                self._pass(x, features, encode, check_cancel, None)
        grad = torch.zeros_like(x)
        values = self._pass(x, features, encode, check_cancel, grad)
        pixels = x.detach().requires_grad_(True)
        for term, weight in criterion.terms:
            if not isinstance(term, FeatureLoss):
                value = weight * term({}, pixels)
                value.backward()
                values[term.name] = value.detach()
        if pixels.grad is not None:
            grad += pixels.grad
        x.grad = grad
        terms = {term.name: values[term.name] for term, _ in criterion.terms}  # the objective's order
        total = sum(terms.values(), torch.zeros((), dtype=torch.float32, device=x.device))
        return total, terms

    def _pass(self, x: torch.Tensor, features: list[tuple[FeatureLoss, float]], encode: Encoder,
              check_cancel: Callable[[], None], grad: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One pass over the tiles; with `grad`, each tile's pixel gradient is added into it. The feature terms'
        weighted values for the image."""
        layers = tuple(dict.fromkeys(layer for term, _ in features for layer in term.layers))
        for term, _ in features:
            term.begin_pass()
        for tile in self.grid.tiles:
            check_cancel()
            crop = tile.crop(x.detach()).clone().requires_grad_(grad is not None)
            cores = tile.cores(encode(crop), layers)
            part = sum((weight * term.partial(cores, tile) for term, weight in features),
                       torch.zeros((), dtype=torch.float32, device=x.device))
            if grad is not None and part.requires_grad:
                part.backward()
                assert crop.grad is not None
                tile.crop(grad).add_(crop.grad)
            del cores, part
        return {term.name: weight * term.end_pass() for term, weight in features}
