"""The terms of the objective, as objects with one interface, and the weighted sum the optimiser minimises.

Gatys et al.'s three terms, each normalised by the size of its own target, so one set of weights gives the same
balance at every image size, on every layer and with either weight source:

    content = sum_l w_l * ||F_l(x) - F_l(c)||^2 / ||F_l(c)||^2
    style   = sum_l v_l * ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2,  G_l = F_l F_l^T / (H_l W_l)
    tv      = mean((x[i+1, j] - x[i, j])^2) + mean((x[i, j+1] - x[i, j])^2)   on 0..1 RGB pixels

with layer weights w, v normalised to sum 1. Content and style share one comparison (`FeatureLoss`) and differ only
in how they represent a layer's features: as they are, or as their Gram matrix (as pystiche's
`FeatureReconstructionLoss` and `GramLoss` do). Grams and losses are always computed in float32, also when the
convolutions run in bf16/fp16 (fp16 Grams overflow).

Every term is a `LossTerm`: `retarget(level)` sets its target from a pyramid level's images, `term(features,
image)` gives its value.

A level optimised tile by tile (`nst_core.tiles`, `nst_core.tiled`) evaluates the feature terms in passes over the
tiles: `begin_pass()`, `partial(cores, tile)` per tile (the tile's part of the term, whose gradient is that tile's
part of the whole image's gradient) and `end_pass()` (the term's value for the whole image). The content term's
partials add up to its whole-image value. The style term's gradient needs the whole image's Gram G first
(`needs_prepass`): a pass without gradients sums it, then each partial is 2<G - S, G_tile> / ||S||^2 with G held
fixed, whose gradient is exactly this tile's part of the gradient of ||G - S||^2 / ||S||^2. Pixel terms (tv,
temporal) see the whole image as they are.

`WeightedSum` adds the weighted terms and hands back each one's value for progress (after
crowsonkb/style-transfer-pytorch's `SumLoss`). A new term is one class and one entry in `objective()`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from nst_core.params import StyleParams
from nst_core.tiles import Tile, TileGrid, tiled_grams

__all__ = [
    "STYLE_TARGETS",
    "ContentLoss",
    "Encoder",
    "FeatureLoss",
    "LevelImages",
    "LossTerm",
    "StyleLoss",
    "TVLoss",
    "TemporalLoss",
    "WeightedSum",
    "gram",
    "normalised",
    "objective",
    "tv_loss",
]

Features = Mapping[str, torch.Tensor]


class Encoder(Protocol):
    """Image (N, 3, H, W) in 0..1 -> features per layer, as the job's network runs it."""

    #: Identifies the network, its weights and precision: targets computed by equal keys are interchangeable.
    key: Hashable

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class LevelImages:
    """What the terms of one pyramid level take their targets from (colour preservation already applied)."""

    content: torch.Tensor  # the content at the level's size
    styles: tuple[torch.Tensor, ...]  # each style image at its size for this level
    encode: Encoder
    grid: TileGrid | None = None  # the level's tiles when it is optimised tile by tile (bounded memory)


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


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of an (N, 3, H, W) image in 0..1: mean squared difference of neighbours."""
    image = image.float()
    dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).mean()
    dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).mean()
    return dx + dy


class LossTerm(ABC):
    """One term of the objective: a target set per level, a value from the image's features and the image."""

    #: The key of this term's value in progress events and results ("content", "style", ...).
    name: str

    def retarget(self, level: LevelImages) -> None:  # noqa: B027  (a term without a target keeps this no-op)
        """Set the target for a new pyramid level (the default: the term needs none)."""

    @abstractmethod
    def __call__(self, features: Features, image: torch.Tensor) -> torch.Tensor:
        """The term's unweighted value (a float32 scalar) for the image being optimised."""


class FeatureLoss(LossTerm):
    """Relative squared distance of a representation of the features to its target, per layer, weighted."""

    def __init__(self, layers: Sequence[str], weights: Sequence[float] | None = None) -> None:
        self.layers = tuple(layers)
        self.weights = normalised(weights, len(self.layers))
        self.targets: dict[str, torch.Tensor] = {}
        self.norms: dict[str, torch.Tensor] = {}
        self.grid: TileGrid | None = None  # set by `retarget` for a tiled level

    @abstractmethod
    def represent(self, features: torch.Tensor) -> torch.Tensor:
        """How this term sees one layer's (N, C, H, W) features, in float32."""

    def set_targets(self, targets: Mapping[str, torch.Tensor]) -> None:
        """Targets already in this term's representation, one per layer."""
        self.targets = {layer: targets[layer].detach().float() for layer in self.layers}
        self.norms = {k: v.pow(2).sum().clamp_min(1e-12) for k, v in self.targets.items()}

    def __call__(self, features: Features, image: torch.Tensor) -> torch.Tensor:
        return self.distance({layer: self.represent(features[layer]) for layer in self.layers}, self.targets)

    def distance(self, represented: Features, targets: Features) -> torch.Tensor:
        """sum over layers of weight * ||represented - target||^2 / norm (the whole level's norm per layer)."""
        total = represented[self.layers[0]].new_zeros((), dtype=torch.float32)
        for layer, weight in zip(self.layers, self.weights, strict=True):
            total = total + weight * (represented[layer] - targets[layer]).pow(2).sum() / self.norms[layer]
        return total

    # ---- tiled levels: one pass over the tiles per evaluation (see the module docstring) ----------------------
    #: True when the term's partials need a pass over all tiles without gradients first (the style term's Gram).
    needs_prepass = False

    @abstractmethod
    def begin_pass(self) -> None:
        """A pass over the level's tiles starts."""

    @abstractmethod
    def partial(self, cores: Features, tile: Tile) -> torch.Tensor:
        """This tile's part of the term, from the features at its core positions."""

    @abstractmethod
    def end_pass(self) -> torch.Tensor:
        """The term's value for the image the pass saw."""


class ContentLoss(FeatureLoss):
    """The content image's features, compared as they are."""

    name = "content"

    def __init__(self, layers: Sequence[str], weights: Sequence[float] | None = None) -> None:
        super().__init__(layers, weights)
        self.tile_targets: list[dict[str, torch.Tensor]] = []
        self._sum: torch.Tensor | None = None

    def represent(self, features: torch.Tensor) -> torch.Tensor:
        return features.float()

    def retarget(self, level: LevelImages) -> None:
        self.grid = level.grid
        with torch.no_grad():
            if level.grid is None:
                self.tile_targets = []
                self.set_targets(level.encode(level.content))
                return
            self.tile_targets = [
                {layer: core.detach().float() for layer, core in
                 tile.cores(level.encode(tile.crop(level.content)), self.layers).items()}
                for tile in level.grid.tiles]
        self.norms = {layer: sum((t[layer].pow(2).sum() for t in self.tile_targets),
                                 torch.zeros((), device=level.content.device)).clamp_min(1e-12)
                      for layer in self.layers}

    def begin_pass(self) -> None:
        self._sum = None

    def partial(self, cores: Features, tile: Tile) -> torch.Tensor:
        total = self.distance({layer: self.represent(cores[layer]) for layer in self.layers},
                              self.tile_targets[tile.index])
        self._sum = total.detach() if self._sum is None else self._sum + total.detach()
        return total

    def end_pass(self) -> torch.Tensor:
        assert self._sum is not None, "a pass over no tiles"
        return self._sum


class _StyleTargetCache:
    """Gram targets per (style pixels, network, layers): a worker re-uses them across levels, jobs and re-rolls."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[tuple[object, ...], dict[str, torch.Tensor]] = OrderedDict()

    def get(self, key: tuple[object, ...], compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        value = compute()
        self.entries[key] = value
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return value


STYLE_TARGETS = _StyleTargetCache()


def _pixels_key(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).hexdigest()


class StyleLoss(FeatureLoss):
    """The style images' Gram matrices (blended with normalised weights when there are several)."""

    name = "style"
    needs_prepass = True

    def __init__(self, layers: Sequence[str], weights: Sequence[float] | None = None, *,
                 blend: Sequence[float] = (1.0,)) -> None:
        super().__init__(layers, weights)
        self.blend = list(blend)
        self._previous: dict[str, torch.Tensor] | None = None  # the image's Gram, from the pass before
        self._sums: dict[str, torch.Tensor] = {}

    def represent(self, features: torch.Tensor) -> torch.Tensor:
        return gram(features)

    def grams(self, style: torch.Tensor, encode: Encoder, *, tile_edge: int | None = None) -> dict[str, torch.Tensor]:
        """One style image's Gram matrices at this term's layers (cached per pixels and network); with
        `tile_edge`, computed tile by tile when the image is bigger than a tile (bounded memory)."""

        tiled = tile_edge if tile_edge is not None and max(style.shape[-2:]) > tile_edge else None

        def compute() -> dict[str, torch.Tensor]:
            if tiled is not None:
                return tiled_grams(style, encode, self.layers, tiled)
            with torch.no_grad():
                feats = encode(style)
                return {layer: gram(feats[layer]) for layer in self.layers}

        return STYLE_TARGETS.get((_pixels_key(style), encode.key, self.layers, tiled), compute)

    def retarget(self, level: LevelImages) -> None:
        self.grid, self._previous = level.grid, None
        edge = level.grid.edge if level.grid is not None else None
        grams = [self.grams(style, level.encode, tile_edge=edge) for style in level.styles]
        self.set_targets({layer: sum((w * g[layer] for g, w in zip(grams, self.blend, strict=True)),
                                     torch.zeros_like(grams[0][layer])) for layer in self.layers})

    def begin_pass(self) -> None:
        self._sums = {}

    def partial(self, cores: Features, tile: Tile) -> torch.Tensor:
        """2<G - S, G_tile> / ||S||^2 per layer: G the image's Gram from the pass before (the prepass, on the same
        image), G_tile this tile's share of it; 0 when no pass has summed G yet (the prepass itself)."""
        assert self.grid is not None
        total = cores[self.layers[0]].new_zeros((), dtype=torch.float32)
        for layer, weight in zip(self.layers, self.weights, strict=True):
            flat = cores[layer].float().reshape(cores[layer].shape[0], cores[layer].shape[1], -1)
            share = torch.bmm(flat, flat.transpose(1, 2)) / self.grid.positions(layer)
            self._sums[layer] = share.detach() + self._sums[layer] if layer in self._sums else share.detach()
            if self._previous is not None:
                slope = (self._previous[layer] - self.targets[layer]).detach()
                total = total + weight * 2 * (slope * share).sum() / self.norms[layer]
        return total

    def end_pass(self) -> torch.Tensor:
        self._previous = self._sums
        return self.distance(self._sums, self.targets)


class TVLoss(LossTerm):
    """Total variation of the pixels: smooths the noise the other terms leave."""

    name = "tv"

    def __call__(self, features: Features, image: torch.Tensor) -> torch.Tensor:
        return tv_loss(image)


class TemporalLoss(LossTerm):
    """Ruder et al.'s short-term temporal loss: (1/D) sum_k c_k (x_k - w_k)^2 over the pixels, D = H x W x 3.

    Each reference is an earlier frame's result warped onto this frame (`w`) with the consistency weights where the
    flow holds (`c`, 1 trusted, 0 occluded or on a motion boundary). A looping animation's last frame has two: the
    previous frame and the first. References are given at the output size and resized to each level's.
    """

    name = "temporal"

    def __init__(self) -> None:
        self.references: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.level: list[tuple[torch.Tensor, torch.Tensor]] = []

    def set_references(self, references: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """(warped image (1, 3, H, W), weights (1, 1, H, W)) per earlier frame this frame should agree with."""
        self.references = [(image.detach().float(), weights.detach().float()) for image, weights in references]
        self.level = list(self.references)

    def retarget(self, level: LevelImages) -> None:
        size = level.content.shape[-2:]
        self.level = [(image, weights) if image.shape[-2:] == size else
                      (F.interpolate(image, size=size, mode="bilinear", align_corners=False),
                       (F.interpolate(weights, size=size, mode="area") > 0.999).float())
                      for image, weights in self.references]

    def __call__(self, features: Features, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros((), dtype=torch.float32)
        for reference, weights in self.level:
            total = total + (weights * (image.float() - reference).pow(2)).sum() / image.numel()
        return total


class WeightedSum:
    """sum_k weight_k * term_k: the objective, with each weighted term's value kept for progress."""

    def __init__(self, terms: Sequence[tuple[LossTerm, float]]) -> None:
        names = [term.name for term, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"each loss term at most once: {names}")
        self.terms = list(terms)

    def including(self, extra: Sequence[tuple[LossTerm, float]]) -> WeightedSum:
        """This sum with more terms (a temporal term for an animation's later frames)."""
        return WeightedSum([*self.terms, *extra])

    def retarget(self, level: LevelImages) -> None:
        for term, _ in self.terms:
            term.retarget(level)

    def __call__(self, features: Features, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, {term name: weighted value})."""
        values = {term.name: weight * term(features, image) for term, weight in self.terms}
        parts = iter(values.values())
        total = next(parts)
        for value in parts:
            total = total + value
        return total, values


def objective(params: StyleParams, style_count: int) -> WeightedSum:
    """The objective `params` ask for: content, style (blending `style_count` images) and total variation."""
    return WeightedSum([
        (ContentLoss(params.content_layers, params.content_layer_weights), params.content_weight),
        (StyleLoss(params.style_layers, params.style_layer_weights,
                   blend=normalised(params.style_blend, style_count)), params.style_weight),
        (TVLoss(), params.tv_weight),
    ])
