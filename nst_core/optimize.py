"""The optimisation: coarse-to-fine over a few scales, L-BFGS or Adam on the pixels, progress and cancellation.

One readable loop (after crowsonkb/style-transfer-pytorch's `stylize`): plan the pyramid once, choose the colour
strategy once, build the objective (a weighted sum of loss terms) once; then for each level, smallest first, set
the terms' targets from the level's images, start from the previous level's result upsampled (or from the `init`
image at the first level), and optimise the pixels of an RGB image in 0..1 for that level's iteration budget. A
level stops early when the loss reaches a relative plateau. The cancellation check runs before every iteration and
inside every loss evaluation (L-BFGS calls its closure more than once), so a cancel lands within one iteration.

A level too big to hold the network's activations for all its pixels (`tiles`, `nst_core.tiles`) is optimised
tile by tile: the same loop, each evaluation summed over the level's tiles (`nst_core.tiled`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from nst_core.color import ColourStrategy, colour_strategy
from nst_core.device import Placement
from nst_core.errors import JobCancelled
from nst_core.losses import LevelImages, LossTerm, WeightedSum, objective
from nst_core.params import StyleParams
from nst_core.progress import CancelCheck, EventKind, ProgressCallback, ProgressEvent
from nst_core.pyramid import Level, RunClock, plan_levels
from nst_core.tiled import TiledEvaluation, lbfgs_history
from nst_core.tiles import AUTO_TILE_ABOVE_PIXELS, TileGrid
from nst_core.vgg import PlacedEncoder

__all__ = ["StylizeOutcome", "image_to_tensor", "stylize", "tensor_to_image"]

#: Iterations over which the relative loss improvement is measured for early stopping.
PLATEAU_WINDOW = 10
#: A level never stops early before this many iterations.
MIN_LEVEL_ITERATIONS = 20
#: A loss above this multiple of the level's best so far is an L-BFGS overshoot: back to the best image, and the
#: optimiser starts afresh (its curvature history led it astray). Seen with strong temporal weights on animations.
SPIKE_FACTOR = 1.5
#: Steps L-BFGS remembers (its curvature history).
LBFGS_HISTORY = 20


@dataclass
class StylizeOutcome:
    image: Image.Image
    iterations: int
    losses: dict[str, float]
    setup_seconds: float  # until the first iteration could start (weights and targets ready)
    optimise_seconds: float
    raw: torch.Tensor  # the optimised pixels before colour finishing, (1, 3, H, W) at the output size


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


class _Best:
    """The lowest-loss image a level has evaluated, with its losses."""

    def __init__(self) -> None:
        self.loss = float("inf")
        self.image: torch.Tensor | None = None
        self.terms: dict[str, torch.Tensor] = {}

    def offer(self, x: torch.Tensor, terms: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        value = float(total.detach())
        if value < self.loss:
            self.loss = value
            self.image = x.detach().clone()  # the optimiser goes on changing x in place
            self.terms = {k: v.detach() for k, v in terms.items()}  # read only once, at the level's end

    @property
    def losses(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.terms.items()}, "total": self.loss}


class _Run:
    """One stylisation: its network, colour strategy, clock and progress reports."""

    def __init__(self, params: StyleParams, placement: Placement, plan: list[Level], seed: int,
                 progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.started = time.perf_counter()  # the set-up time includes building (or finding) the network
        self.params = params
        self.device = placement.device
        self.seed = seed
        self.progress = progress
        self.should_cancel = should_cancel
        self.encode = PlacedEncoder(params, placement)
        self.colour: ColourStrategy = colour_strategy(params.preserve_colors)
        self.clock = RunClock(plan, started=self.started)  # holds the plan: its levels

    def run(self, content: Image.Image, styles: Sequence[Image.Image], *, start: torch.Tensor | None = None,
            extra_terms: Sequence[tuple[LossTerm, float]] = ()) -> StylizeOutcome:
        criterion = objective(self.params, len(styles)).including(extra_terms)
        generator = torch.Generator().manual_seed(self.seed)
        x: torch.Tensor | None = None
        losses: dict[str, float] = {}
        for level in self.clock.levels:
            self.check_cancel()
            grid = self._grid(level)
            original, images = self._level_images(level, content, styles, grid)
            criterion.retarget(images)
            x = self._start_image(x if x is not None else start, level, images, generator)
            self.clock.begin(level)
            tiled = f", in {len(grid.tiles)} tiles of {grid.edge} px" if grid is not None else ""
            self._emit(EventKind.SCALE, level, losses, None, message=f"{level.label}: {level.size[0]}x"
                       f"{level.size[1]} px, {level.iterations} iterations{tiled}")
            x, losses = self._optimise(x, level, criterion, original, grid)
        assert x is not None  # the plan has at least one level
        result = self.colour.finish(x.detach(), original)  # the last level's content, at the output size
        return StylizeOutcome(image=tensor_to_image(result), iterations=self.clock.iteration, losses=losses,
                              setup_seconds=self.clock.setup_seconds,
                              optimise_seconds=self.clock.optimise_seconds(), raw=x.detach())

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise JobCancelled(self.clock.iteration)

    def _grid(self, level: Level) -> TileGrid | None:
        """The level's tiles when it is optimised tile by tile (`tiles`: on, or auto on the CPU above 1 MP)."""
        if self.params.tiles == "off":
            return None
        grid = TileGrid.cover(level.size[0], level.size[1], self.params.tile_size)
        if grid.single:
            return None
        wanted = self.params.tiles == "on" or (self.device.type == "cpu" and level.pixels > AUTO_TILE_ABOVE_PIXELS)
        return grid if wanted else None

    def _level_images(self, level: Level, content: Image.Image, styles: Sequence[Image.Image],
                      grid: TileGrid | None) -> tuple[torch.Tensor, LevelImages]:
        """The level's content as it is (for finishing) and the images its terms take targets from."""
        original = image_to_tensor(_resized(content, level.size), self.device)
        prepared = tuple(
            self.colour.prepare_style(image_to_tensor(_resized(style, _style_size(
                style, level.size, self.params.style_scale)), self.device), original)
            for style in styles)
        return original, LevelImages(content=self.colour.prepare_content(original), styles=prepared,
                                     encode=self.encode, grid=grid)

    def _start_image(self, previous: torch.Tensor | None, level: Level, images: LevelImages,
                     generator: torch.Generator) -> torch.Tensor:
        """The first level starts from the `init` image (or the caller's start image, such as an animation's previous
        frame warped onto this one); every later one from the previous result, resized."""
        if previous is not None:
            x = F.interpolate(previous.to(self.device), size=(level.size[1], level.size[0]), mode="bicubic",
                              align_corners=False).clamp(0, 1)
        elif self.params.init == "noise":
            x = torch.rand(images.content.shape, generator=generator).to(self.device)
        elif self.params.init == "style":
            x = F.interpolate(images.styles[0], size=images.content.shape[-2:], mode="bilinear", align_corners=False)
        else:
            x = images.content.clone()
        return x.detach().contiguous()

    def _optimizer(self, x: torch.Tensor, tiled: bool) -> torch.optim.Optimizer:
        # a tiled level's L-BFGS remembers fewer steps (a memory budget), or runs Adam: see nst_core.tiled
        history = lbfgs_history(x, LBFGS_HISTORY) if tiled else LBFGS_HISTORY
        if self.params.optimizer == "lbfgs" and history:
            return torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=history)
        return torch.optim.Adam([x], lr=self.params.learning_rate)

    def _optimise(self, x: torch.Tensor, level: Level, criterion: WeightedSum, original: torch.Tensor,
                  grid: TileGrid | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Optimise `x` for the level's budget (or until a plateau); the best image seen and its losses.

        The best image is the one with the lowest loss evaluated, so a last step that overshot is not returned.
        """
        x = x.requires_grad_(True)
        tiles = TiledEvaluation(grid) if grid is not None else None
        optimizer = self._optimizer(x, tiles is not None)
        last: dict[str, torch.Tensor] = {}
        best = _Best()

        def closure() -> torch.Tensor:
            self.check_cancel()
            optimizer.zero_grad(set_to_none=True)
            if tiles is not None:
                total, terms = tiles(x, criterion, self.encode, self.check_cancel)
            else:
                total, terms = criterion(self.encode(x), x)
                total.backward()
            last.update(terms, total=total)
            best.offer(x, terms, total)
            return total

        history: list[float] = []
        losses: dict[str, float] = {}
        for _ in range(level.iterations):
            self.check_cancel()
            optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            self.clock.step()
            losses = {k: float(v.detach()) for k, v in last.items()}
            history.append(losses["total"])
            if losses["total"] > SPIKE_FACTOR * best.loss:
                with torch.no_grad():
                    x.copy_(best.image)
                optimizer = self._optimizer(x, tiles is not None)
            self._emit(EventKind.ITERATION, level, losses, self.clock.eta(), x=x, content=original)
            if self._plateau(history):
                done = self.clock.done_here
                skipped = self.clock.stop_early()
                self._emit(EventKind.EARLY_STOP, level, losses, self.clock.eta(), message=f"scale {level.index + 1} "
                           f"converged after {done} iterations; skipped {skipped}")
                break
        if best.image is None:
            return x.detach(), losses
        return best.image, best.losses

    def _plateau(self, history: list[float]) -> bool:
        tol = self.params.early_stop
        if tol <= 0 or len(history) < max(MIN_LEVEL_ITERATIONS, PLATEAU_WINDOW + 1):
            return False
        before, now = history[-PLATEAU_WINDOW - 1], history[-1]
        # Only a small *improvement* is a plateau; a loss that rose (an L-BFGS spike) is not convergence.
        return before > 0 and 0 <= (before - now) / before < tol

    def _emit(self, kind: EventKind, level: Level, losses: dict[str, float], eta: float | None, *,
              message: str = "", x: torch.Tensor | None = None, content: torch.Tensor | None = None) -> None:
        if self.progress is None:
            return
        preview = None
        if x is not None and content is not None:
            snapshot, base, finish = x, content, self.colour.finish

            def preview(max_side: int = 256) -> Image.Image:
                image = tensor_to_image(finish(snapshot.detach(), base))
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                return image

        self.progress(ProgressEvent(
            kind=kind, iteration=self.clock.iteration, total=self.clock.total, scale=level.index + 1,
            scales=level.count, width=level.size[0], height=level.size[1], losses=dict(losses),
            elapsed=self.clock.elapsed(), eta=eta, message=message, preview=preview))


def stylize(content: Image.Image, styles: Sequence[Image.Image], params: StyleParams, placement: Placement, *,
            seed: int, progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
            plan: list[Level] | None = None, start: torch.Tensor | None = None,
            extra_terms: Sequence[tuple[LossTerm, float]] = ()) -> StylizeOutcome:
    """Stylise `content` (full-resolution RGB) with `styles` as `params` say, on `placement`.

    An animation's later frames pass their own `plan` (the top level(s) only), a `start` image (the previous
    frame's raw result warped onto this one, any size) and `extra_terms` (the temporal term).
    Raises `JobCancelled` when `should_cancel()` turns true; GPU out-of-memory errors propagate (see `run_job`).
    """
    params.check_styles(len(styles))
    torch.manual_seed(seed)
    plan = plan if plan is not None else plan_levels(params, content.width, content.height)
    return _Run(params, placement, plan, seed, progress, should_cancel).run(content, styles, start=start,
                                                                            extra_terms=extra_terms)
