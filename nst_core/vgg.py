"""VGG-19 as a frozen feature extractor: one forward pass returns every layer the losses need.

The network is truncated after the deepest requested layer, its weights never get gradients, max pooling is
replaced by average pooling by default (Gatys et al. found it gives smoother results), and the input convention of
the weight source (Caffe BGR 0-255, or ImageNet RGB mean/std) is applied inside `forward`, so callers always pass
RGB images in 0..1, shaped (N, 3, H, W).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from nst_core.device import Placement
from nst_core.layers import CONV_NAMES, SEQUENCE
from nst_core.params import StyleParams
from nst_core.weights import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, VGGWeights, load_weights

__all__ = ["ExtractorKey", "PlacedEncoder", "VGGFeatures", "extractor_for", "extractor_key", "get_feature_extractor"]


class VGGFeatures(nn.Module):
    """Frozen, truncated VGG-19. `forward(x)` maps layer name -> activation for `self.layers`."""

    def __init__(self, weights: VGGWeights, layers: Iterable[str], *, pooling: str = "avg") -> None:
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in SEQUENCE]
        if unknown:
            raise ValueError(f"unknown VGG-19 layers: {unknown}")
        last = max(SEQUENCE.index(name) for name in self.layers)
        steps: list[tuple[str, nn.Module]] = []
        conv_index = {name: i for i, name in enumerate(CONV_NAMES)}
        in_channels = 3
        for name in SEQUENCE[: last + 1]:
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


@dataclass(frozen=True)
class ExtractorKey:
    """What makes two feature extractors the same: a worker builds one per key and re-uses it for every job."""

    weights: str
    layers: tuple[str, ...]
    pooling: str
    device: str
    channels_last: bool


def extractor_key(params: StyleParams, placement: Placement) -> ExtractorKey:
    """The extractor a job with `params` on `placement` runs: the one place that key is built (the engine and a
    worker's warm-up must agree, or the warm-up builds a network no job uses)."""
    layers = tuple(dict.fromkeys(params.content_layers + params.style_layers))
    return ExtractorKey(params.weights, layers, params.pooling, str(placement.device), placement.channels_last)


@functools.lru_cache(maxsize=8)
def get_feature_extractor(key: ExtractorKey) -> VGGFeatures:
    """A cached extractor per key: a worker builds it once, not per job."""
    model = VGGFeatures(load_weights(key.weights), key.layers, pooling=key.pooling).to(key.device)
    if key.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def extractor_for(params: StyleParams, placement: Placement) -> VGGFeatures:
    """The (cached) extractor for a job with `params` on `placement`."""
    return get_feature_extractor(extractor_key(params, placement))


class PlacedEncoder:
    """The job's extractor as the optimisation runs it: autocast on its placement, channels_last for the network.

    The optimised image itself stays contiguous (L-BFGS flattens its gradient); only the network sees
    channels_last. `key` names the network and precision, so loss targets computed through equal keys are shared.
    """

    def __init__(self, params: StyleParams, placement: Placement) -> None:
        self.model = extractor_for(params, placement)
        self.placement = placement
        self.key: Hashable = (extractor_key(params, placement), placement.precision)

    def _autocast(self) -> AbstractContextManager[object]:
        if self.placement.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.placement.device.type, dtype=self.placement.autocast_dtype)

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.placement.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.model(image)
