"""VGG-19 as a frozen feature extractor: one forward pass returns every layer the losses need.

The network is truncated after the deepest requested layer, its weights never get gradients, max pooling is
replaced by average pooling by default (Gatys et al. found it gives smoother results), and the input convention of
the weight source (Caffe BGR 0-255, or ImageNet RGB mean/std) is applied inside `forward`, so callers always pass
RGB images in 0..1, shaped (N, 3, H, W).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn

from nst_core.params import LAYER_NAMES
from nst_core.weights import CAFFE_MEAN_BGR, CONV_NAMES, IMAGENET_MEAN, IMAGENET_STD, VGGWeights, load_weights

__all__ = ["VGGFeatures", "get_feature_extractor"]

# The full sequence of named steps: each block's convs and ReLUs, then its pool.
_BLOCK_ENDS = frozenset({"relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"})
_SEQUENCE: tuple[str, ...] = tuple(
    step for name in LAYER_NAMES for step in ((name, f"pool{name[4]}") if name in _BLOCK_ENDS else (name,))
)


class VGGFeatures(nn.Module):
    """Frozen, truncated VGG-19. `forward(x)` maps layer name -> activation for `self.layers`."""

    def __init__(self, weights: VGGWeights, layers: Iterable[str], *, pooling: str = "avg") -> None:
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in _SEQUENCE]
        if unknown:
            raise ValueError(f"unknown VGG-19 layers: {unknown}")
        last = max(_SEQUENCE.index(name) for name in self.layers)
        steps: list[tuple[str, nn.Module]] = []
        conv_index = {name: i for i, name in enumerate(CONV_NAMES)}
        in_channels = 3
        for name in _SEQUENCE[: last + 1]:
            if name.startswith("conv"):
                weight, bias = weights.convs[conv_index[name]]
                conv = nn.Conv2d(in_channels, weight.shape[0], kernel_size=3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(weight)
                    conv.bias.copy_(bias)
                in_channels = weight.shape[0]
                steps.append((name, conv))
            elif name.startswith("relu"):
                steps.append((name, nn.ReLU(inplace=False)))
            else:
                pool: nn.Module = nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2)
                steps.append((name, pool))
        self.names = tuple(name for name, _ in steps)
        self.net = nn.ModuleList(module for _, module in steps)
        self.requires_grad_(False)
        self.eval()
        if weights.preprocessing == "caffe":
            # RGB 0..1 -> BGR 0..255 minus the mean pixel, as one per-channel affine map after a channel flip.
            self._flip = True
            scale = torch.full((3,), 255.0)
            shift = -torch.tensor(CAFFE_MEAN_BGR)
        else:
            self._flip = False
            scale = 1.0 / torch.tensor(IMAGENET_STD)
            shift = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flip(1) if self._flip else image
        return x * self.scale + self.shift

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(image)
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names, self.net, strict=True):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


@functools.lru_cache(maxsize=8)
def get_feature_extractor(weights: str, layers: tuple[str, ...], pooling: str, device: str,
                          channels_last: bool) -> VGGFeatures:
    """A cached extractor per (weights, layers, pooling, device): a worker builds it once, not per job."""
    model = VGGFeatures(load_weights(weights), layers, pooling=pooling).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
