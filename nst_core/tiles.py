"""Large outputs in bounded memory: a pyramid level cut into tiles, each seen with a margin of context.

A whole-image step holds the VGG-19 activations of every pixel for the backward pass (about 3 GB per megapixel on
the CPU), so 2048 px needs ~9 GB and 4096 px ~35 GB. A tiled level keeps the image whole but runs the network on
one tile at a time (`nst_core.tiled`), so the activations held are those of one tile whatever the output size.

`TileGrid.cover` partitions the level into cores of about `edge` px, on multiples of 16 px (VGG-19's stride at
relu5_1), and gives each core a margin of context (`edge / 8`, at least 32 px) on the sides where the image goes
on. The network sees the core with its margin; only the core's feature positions are used (`Tile.core`), so every
feature position of the level is counted exactly once and is computed with context around it, as the whole image
would compute it. Near a core's edge the margin stands in for the rest of the image; VGG's zero padding at the
margin's own edge stays out of the core.

`tiled_grams` computes a big style image's Gram matrices over the same kind of grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch

from nst_core.layers import layer_stride

__all__ = ["AUTO_TILE_ABOVE_PIXELS", "Tile", "TileGrid", "tiled_grams"]

#: On the CPU, `tiles="auto"` tiles a level above this many pixels (whole-image peak ~3 GB at 1 MP: see README).
AUTO_TILE_ABOVE_PIXELS = 1024 * 1024
#: Cores start on multiples of this: VGG-19's pooling stride at its deepest style layer (relu5_1).
ALIGN = 16
#: The smallest margin of context around a core, in pixels.
MIN_MARGIN = 32


@dataclass(frozen=True)
class Tile:
    """One core of the grid (right and bottom exclusive) and the box the network sees: the core and its margin."""

    index: int
    left: int
    top: int
    right: int
    bottom: int
    outer_left: int
    outer_top: int
    outer_right: int
    outer_bottom: int

    @property
    def pixels(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The part of an (N, C, H, W) level image the network sees for this tile (a view)."""
        return image[..., self.outer_top:self.outer_bottom, self.outer_left:self.outer_right]

    def core(self, features: torch.Tensor, stride: int) -> torch.Tensor:
        """The core's positions of the features the network computed from `crop` (at a layer of `stride`)."""
        rows = slice((self.top - self.outer_top) // stride, (self.bottom - self.outer_top) // stride)
        cols = slice((self.left - self.outer_left) // stride, (self.right - self.outer_left) // stride)
        return features[..., rows, cols]

    def cores(self, features: Mapping[str, torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        return {layer: self.core(features[layer], layer_stride(layer)) for layer in layers}


def _bounds(length: int, edge: int) -> list[int]:
    """Core boundaries along one side: about `edge` apart, on multiples of ALIGN, the last at `length`."""
    count = max(1, math.ceil(length / edge))
    inner = [round(i * length / count / ALIGN) * ALIGN for i in range(1, count)]
    return [0, *sorted({b for b in inner if 0 < b < length}), length]


@dataclass(frozen=True)
class TileGrid:
    """Cores partitioning a `width` x `height` level, each with its margin."""

    width: int
    height: int
    edge: int
    margin: int
    tiles: tuple[Tile, ...]

    @classmethod
    def cover(cls, width: int, height: int, edge: int) -> TileGrid:
        """Cores of about `edge` px (rounded to a multiple of 16) with a margin of `edge / 8` (at least 32 px)."""
        edge = max(ALIGN * 4, edge // ALIGN * ALIGN)
        margin = max(MIN_MARGIN, edge // 8 // ALIGN * ALIGN)
        rows, cols = _bounds(height, edge), _bounds(width, edge)
        tiles = tuple(
            Tile(index=len(cols[1:]) * r + c, left=left, top=top, right=right, bottom=bottom,
                 outer_left=max(0, left - margin), outer_top=max(0, top - margin),
                 outer_right=min(width, right + margin), outer_bottom=min(height, bottom + margin))
            for r, (top, bottom) in enumerate(pairwise(rows))
            for c, (left, right) in enumerate(pairwise(cols)))
        return cls(width=width, height=height, edge=edge, margin=margin, tiles=tiles)

    @property
    def single(self) -> bool:
        """True when one tile covers the whole level (nothing to gain from tiling)."""
        return len(self.tiles) == 1

    def positions(self, layer: str) -> int:
        """Feature positions of the whole level at `layer` (the sum over the cores)."""
        stride = layer_stride(layer)
        return (self.height // stride) * (self.width // stride)


def tiled_grams(image: torch.Tensor, encode: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
                layers: Sequence[str], edge: int) -> dict[str, torch.Tensor]:
    """The Gram matrices (1, C, C), float32, of `image` (1, 3, H, W) at `layers`, summed over the cores of a
    `TileGrid`, so no more than one tile's activations are held at once."""
    grid = TileGrid.cover(image.shape[-1], image.shape[-2], edge)
    sums: dict[str, torch.Tensor] = {}
    for tile in grid.tiles:
        with torch.no_grad():
            cores = tile.cores(encode(tile.crop(image)), layers)
        for layer, core in cores.items():
            flat = core.float().reshape(core.shape[0], core.shape[1], -1)
            part = torch.bmm(flat, flat.transpose(1, 2))
            sums[layer] = part if layer not in sums else sums[layer] + part
    return {layer: sums[layer] / grid.positions(layer) for layer in layers}
