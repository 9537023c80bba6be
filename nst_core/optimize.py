"""The optimisation: coarse-to-fine over a few scales, L-BFGS or Adam on the pixels, progress and cancellation.

One readable loop (after crowsonkb/style-transfer-pytorch): for each level of the pyramid, smallest first, build the
content and style targets at that size, start from the previous level's result upsampled (or from the `init`
image at the first level), and optimise the pixels of an RGB image in 0..1 for that level's share of the iteration
budget. A level stops early when the loss reaches a relative plateau. The cancellation check runs before every
iteration and inside every loss evaluation (L-BFGS calls its closure more than once), so a cancel lands within one
iteration.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from nst_core import color
from nst_core.device import Placement
from nst_core.errors import JobCancelled
from nst_core.losses import ContentLoss, StyleLoss, gram, normalised, tv_loss
from nst_core.params import StyleParams, scale_sizes, split_iterations
from nst_core.progress import CancelCheck, ProgressCallback, ProgressEvent
from nst_core.vgg import VGGFeatures, get_feature_extractor

__all__ = ["StylizeOutcome", "image_to_tensor", "stylize", "tensor_to_image"]

#: Iterations over which the relative loss improvement is measured for early stopping.
PLATEAU_WINDOW = 10
#: A level never stops early before this many iterations.
MIN_LEVEL_ITERATIONS = 20


@dataclass
class StylizeOutcome:
    image: Image.Image
    iterations: int
    losses: dict[str, float]
    levels: list[tuple[int, int]]
    setup_seconds: float  # until the first iteration could start (weights and targets ready)
    optimise_seconds: float


def image_to_tensor(image: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL RGB image -> (1, 3, H, W) float32 tensor in 0..1."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return (data.view(image.height, image.width, 3).permute(2, 0, 1).unsqueeze(0).float() / 255.0).to(device)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) tensor in 0..1 -> PIL RGB image."""
    x = tensor.detach()[0].float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().contiguous()
    return Image.frombytes("RGB", (x.shape[1], x.shape[0]), x.numpy().tobytes())


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _style_size(style: Image.Image, level: tuple[int, int], style_scale: float) -> tuple[int, int]:
    edge = max(16, round(max(level) * style_scale))
    ratio = edge / max(style.size)
    return max(16, round(style.width * ratio)), max(16, round(style.height * ratio))


class _StyleTargetCache:
    """Gram targets per (style pixels, model): a worker re-uses them across levels, jobs and re-rolls."""

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


class _Runner:
    """State of one stylisation: model, placement, progress bookkeeping."""

    def __init__(self, params: StyleParams, placement: Placement, seed: int,
                 progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.params = params
        self.placement = placement
        self.seed = seed
        self.progress = progress
        self.should_cancel = should_cancel
        self.start = time.perf_counter()
        layers = tuple(dict.fromkeys(params.content_layers + params.style_layers))
        self.model: VGGFeatures = get_feature_extractor(params.weights, layers, params.pooling,
                                                        str(placement.device), placement.channels_last)
        self.iteration = 0

    # -- helpers -------------------------------------------------------------------------------------------------
    def autocast(self) -> AbstractContextManager[object]:
        if self.placement.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.placement.device.type, dtype=self.placement.autocast_dtype)

    def to_device(self, image: Image.Image) -> torch.Tensor:
        return image_to_tensor(image, self.placement.device)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # The optimised image stays contiguous (L-BFGS flattens its gradient); only the network sees channels_last.
        if self.placement.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return self.model(x)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise JobCancelled(self.iteration)

    def style_grams(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (_pixels_key(style), self.params.weights, self.params.pooling, self.params.style_layers,
               str(self.placement.device), self.placement.precision)

        def compute() -> dict[str, torch.Tensor]:
            with torch.no_grad():
                feats = self.features(style)
                return {layer: gram(feats[layer]) for layer in self.params.style_layers}

        return STYLE_TARGETS.get(key, compute)

    # -- the run -------------------------------------------------------------------------------------------------
    def run(self, content: Image.Image, styles: Sequence[Image.Image]) -> StylizeOutcome:
        p = self.params
        levels = scale_sizes(content.width, content.height, p.size, p.scales)
        budgets = split_iterations(p.iterations, len(levels))
        self.total = sum(budgets)
        blend = normalised(p.style_blend, len(styles))
        generator = torch.Generator().manual_seed(self.seed)
        setup_seconds = 0.0
        x: torch.Tensor | None = None
        losses: dict[str, float] = {}
        level_seconds: list[float] = []  # per-iteration seconds measured at each level, for the ETA
        for index, (size, budget) in enumerate(zip(levels, budgets, strict=True)):
            self.check_cancel()
            content_img = _resized(content, size)
            content_t = self.to_device(content_img)
            style_ts = []
            for style in styles:
                style_t = self.to_device(_resized(style, _style_size(style, size, p.style_scale)))
                if p.preserve_colors == "histogram":
                    style_t = color.match_histogram(style_t.cpu(), content_t.cpu()).to(self.placement.device)
                elif p.preserve_colors == "luminance":
                    style_t = color.match_luminance(style_t, content_t)
                style_ts.append(style_t)
            target_content = color.luminance(content_t) if p.preserve_colors == "luminance" else content_t
            with torch.no_grad():
                content_feats = self.features(target_content)
            content_loss = ContentLoss({layer: content_feats[layer] for layer in p.content_layers},
                                       p.content_layer_weights)
            style_loss = StyleLoss(StyleLoss.blend([self.style_grams(s) for s in style_ts], blend),
                                   p.style_layer_weights)
            if x is None:
                x = self._initial(target_content, style_ts[0], generator)
            else:
                x = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp(0, 1)
            if p.preserve_colors == "luminance" and index == 0 and p.init == "content":
                x = target_content.clone()
            x = x.detach().contiguous()
            if index == 0:
                setup_seconds = time.perf_counter() - self.start
            self._emit("scale", index, len(levels), size, losses, None, message=f"scale {index + 1}/{len(levels)}: "
                       f"{size[0]}x{size[1]} px, {budget} iterations")
            x, losses, per_iter = self._optimise_level(x, content_loss, style_loss, index, levels, budgets,
                                                       level_seconds, content_t)
            level_seconds.append(per_iter)
        assert x is not None
        result = x.detach()
        if p.preserve_colors == "luminance":
            result = color.combine_luminance(result, content_t)  # the last level's content, at the output size
        return StylizeOutcome(image=tensor_to_image(result), iterations=self.iteration, losses=losses,
                              levels=levels, setup_seconds=setup_seconds,
                              optimise_seconds=time.perf_counter() - self.start - setup_seconds)

    def _initial(self, content: torch.Tensor, style: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.params.init == "noise":
            noise = torch.rand(content.shape, generator=generator)
            return noise.to(self.placement.device)
        if self.params.init == "style":
            return F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False)
        return content.clone()

    def _optimise_level(self, x: torch.Tensor, content_loss: ContentLoss, style_loss: StyleLoss, index: int,
                        levels: list[tuple[int, int]], budgets: list[int], level_seconds: list[float],
                        content_t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], float]:
        p = self.params
        x = x.requires_grad_(True)
        optimizer: torch.optim.Optimizer
        if p.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=20)
        else:
            optimizer = torch.optim.Adam([x], lr=p.learning_rate)
        last: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            self.check_cancel()
            optimizer.zero_grad(set_to_none=True)
            feats = self.features(x)
            terms = {
                "content": p.content_weight * content_loss(feats),
                "style": p.style_weight * style_loss(feats),
                "tv": p.tv_weight * tv_loss(x),
            }
            total = terms["content"] + terms["style"] + terms["tv"]
            total.backward()
            last.update(terms, total=total)
            return total

        history: list[float] = []
        level_start = time.perf_counter()
        budget = budgets[index]
        done = 0
        losses: dict[str, float] = {}
        for step in range(budget):
            self.check_cancel()
            optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            done = step + 1
            self.iteration += 1
            losses = {k: float(v.detach()) for k, v in last.items()}
            history.append(losses["total"])
            per_iter = (time.perf_counter() - level_start) / done
            eta = self._eta(per_iter, budget - done, levels, budgets, index)
            self._emit("iteration", index, len(levels), levels[index], losses, eta, x=x, content=content_t)
            if self._plateau(history, done):
                skipped = budget - done
                self.total -= skipped
                eta = self._eta(per_iter, 0, levels, budgets, index)
                self._emit("early_stop", index, len(levels), levels[index], losses, eta,
                           message=f"scale {index + 1} converged after {done} iterations; skipped {skipped}")
                break
        x = x.detach()
        return x, losses, (time.perf_counter() - level_start) / max(done, 1)

    def _plateau(self, history: list[float], done: int) -> bool:
        tol = self.params.early_stop
        if tol <= 0 or done < max(MIN_LEVEL_ITERATIONS, PLATEAU_WINDOW + 1):
            return False
        before, now = history[-PLATEAU_WINDOW - 1], history[-1]
        # Only a small *improvement* is a plateau; a loss that rose (an L-BFGS spike) is not convergence.
        return before > 0 and 0 <= (before - now) / before < tol

    def _eta(self, per_iter: float, left_here: int, levels: list[tuple[int, int]], budgets: list[int],
             index: int) -> float:
        here_pixels = levels[index][0] * levels[index][1]
        eta = per_iter * left_here
        for later in range(index + 1, len(levels)):
            eta += per_iter * budgets[later] * (levels[later][0] * levels[later][1]) / here_pixels
        return eta

    def _emit(self, kind: str, index: int, count: int, size: tuple[int, int], losses: dict[str, float],
              eta: float | None, *, message: str = "", x: torch.Tensor | None = None,
              content: torch.Tensor | None = None) -> None:
        if self.progress is None:
            return
        preview = None
        if x is not None:
            snapshot, base, luminance = x, content, self.params.preserve_colors == "luminance"

            def preview(max_side: int = 256) -> Image.Image:
                current = snapshot.detach()
                if luminance and base is not None:
                    current = color.combine_luminance(current, base)
                image = tensor_to_image(current)
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                return image

        self.progress(ProgressEvent(
            kind=kind, iteration=self.iteration, total=self.total, scale=index + 1, scales=count, width=size[0],
            height=size[1], losses=dict(losses), elapsed=time.perf_counter() - self.start, eta=eta, message=message,
            preview=preview))


def stylize(content: Image.Image, styles: Sequence[Image.Image], params: StyleParams, placement: Placement, *,
            seed: int, progress: ProgressCallback | None = None,
            should_cancel: CancelCheck | None = None) -> StylizeOutcome:
    """Stylise `content` (full-resolution RGB) with `styles` as `params` say, on `placement`.

    Raises `JobCancelled` when `should_cancel()` turns true; GPU out-of-memory errors propagate (see `run_job`).
    """
    params.check_styles(len(styles))
    torch.manual_seed(seed)
    return _Runner(params, placement, seed, progress, should_cancel).run(content, styles)
