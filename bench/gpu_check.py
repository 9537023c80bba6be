"""Is this GPU ready? One table of the figures that matter on a CUDA machine, in a few minutes.

    python bench/gpu_check.py                 # on a CUDA machine: about 2-5 minutes on one modern GPU
    python bench/gpu_check.py --device cuda:1
    python bench/gpu_check.py --cpu-rehearsal # the same steps, tiny, on the CPU: checks the script, not a GPU

It prints, for chelsea.png with starry_night.jpg (../shared/images, or the tests' 128 px copies without it):
1. the balanced preset at 512 px: fp32 and bf16 autocast, channels_last on and off (time and peak memory);
2. peak memory at 1024, 2048 and 4096 px, 3 L-BFGS iterations at one scale, the whole-image path and the tiled
   (bounded) path ("out of memory" where a path does not fit);
3. the out-of-memory retry: with `torch.cuda.set_per_process_memory_fraction` holding torch to 3 GB, a 2048 px job
   whose whole image does not fit must finish at 2048 px tile by tile (the note says so);
4. a 48-frame 256 px clip (the balanced preset), with the time per frame.
Then the issue's targets: 512 px default result <= 2 s, 2048 px without out-of-memory, peak <= 1.5 GB at 512 px.
Without CUDA it says so and exits 0 (the CPU figures are `bench/compare_pastiche.py` and `bench/large_bench.py`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nst_core.animate import stylize_clip
from nst_core.device import Placement, is_out_of_memory, peak_memory_bytes, reset_peak_memory, resolve_placement
from nst_core.job import run_job
from nst_core.optimize import stylize
from nst_core.params import StyleParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_bench import IMAGES, synthetic_clip  # a sibling script

#: The team's full-size images beside the checkout, or else the tests' 128 px copies (enlarged: the same work).
_TESTS = Path(__file__).resolve().parent.parent / "tests" / "data"
CONTENT, STYLE, CLIP_PHOTO = ((IMAGES / "chelsea.png", IMAGES / "starry_night.jpg", IMAGES / "astronaut.png")
                              if IMAGES.is_dir() else (_TESTS / "chelsea_128.png", _TESTS / "starry_night_128.jpg",
                                                       _TESTS / "astronaut_128.png"))
#: The memory torch may use in the out-of-memory step.
OOM_LIMIT_BYTES = 3 * 1024**3


class Figures:
    """Rows of the one table, printed as they come."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        print("| check | time | peak memory |")
        print("|---|---|---|")

    def add(self, check: str, seconds: float | None, peak: int | None, *, note: str = "") -> None:
        time_text = f"{seconds:.2f} s" if seconds is not None else "-"
        peak_text = f"{peak / 1e9:.2f} GB" if peak is not None else "-"
        if note:
            peak_text += f" ({note})"
        self.rows.append((check, time_text, peak_text))
        print(f"| {check} | {time_text} | {peak_text} |", flush=True)


class Meter:
    """Time and peak memory of one call on the device (CUDA: the allocator's peak; the CPU rehearsal: none)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, work: Callable[[], Any]) -> tuple[Any, float, int | None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        reset_peak_memory(self.device)
        started = time.perf_counter()
        result = work()
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        return result, seconds, peak_memory_bytes(self.device)


def precision_and_layout(figures: Figures, meter: Meter, device: torch.device, size: int,
                         iterations: int | None) -> float | None:
    """Step 1: the balanced preset in each precision and memory layout; returns the default's (bf16, channels_last)
    time."""
    content, style = Image.open(CONTENT).convert("RGB"), Image.open(STYLE).convert("RGB")
    params = StyleParams.preset("balanced", size=size, seed=7, device=str(device), iterations=iterations)
    stylize(content, [style], params.replace(iterations=10, size=128), resolve_placement(str(device), "fp32"),
            seed=7)  # warm-up: weights, kernels, cudnn's choices
    default_time = None
    for precision in ("fp32", "bf16"):
        dtype = torch.bfloat16 if precision == "bf16" else None
        for channels_last in (True, False):
            placement = Placement(device=device, autocast_dtype=dtype, channels_last=channels_last)
            outcome, seconds, peak = meter(lambda p=placement: stylize(content, [style], params, p, seed=7))
            layout = "channels_last" if channels_last else "contiguous"
            figures.add(f"balanced {size} px, {precision}, {layout} ({outcome.iterations} iterations)", seconds,
                        peak)
            if precision == "bf16" and channels_last:
                default_time = seconds
    return default_time


def memory_by_size(figures: Figures, meter: Meter, device: torch.device, sizes: list[int], tile_size: int) -> None:
    """Step 2: peak memory of one scale, 3 iterations, at each size, whole image and tiled."""
    content, style = Image.open(CONTENT).convert("RGB"), Image.open(STYLE).convert("RGB")
    placement = resolve_placement(str(device), "auto")
    for size in sizes:
        for tiles in ("off", "on"):
            params = StyleParams(size=size, scales=1, iterations=3, early_stop=0, seed=7, device=str(device),
                                 tiles=tiles, tile_size=tile_size)
            path = f"tiled ({tile_size} px tiles)" if tiles == "on" else "whole image"
            try:
                _, seconds, peak = meter(lambda p=params: stylize(content, [style], p, placement, seed=7))
                figures.add(f"{size} px, {path}, 3 iterations", seconds, peak)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del exc
                torch.cuda.empty_cache()
                figures.add(f"{size} px, {path}, 3 iterations", None, None, note="out of memory")


def out_of_memory_retry(figures: Figures, meter: Meter, device: torch.device, size: int) -> bool:
    """Step 3: a job held to OOM_LIMIT_BYTES falls back to tiles at the same size. True when it did."""
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, OOM_LIMIT_BYTES / total), device)
    try:
        params = StyleParams(size=size, scales=1, iterations=3, early_stop=0, seed=7, device=str(device))
        result, seconds, peak = meter(lambda: run_job(params, CONTENT.read_bytes(), [STYLE.read_bytes()]))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    retried = any("tile by tile" in note for note in result.notes) and max(result.width, result.height) == size
    note = "; ".join(result.notes) or "fitted without a retry"
    figures.add(f"{size} px held to {OOM_LIMIT_BYTES / 1024**3:.0f} GB: {result.width}x{result.height}, {note}",
                seconds, peak)
    return retried


def clip(figures: Figures, meter: Meter, device: torch.device, frames: int, size: int,
         iterations: int | None) -> None:
    """Step 4: a clip with the balanced preset."""
    images = synthetic_clip(Image.open(CLIP_PHOTO), frames, size)
    style = Image.open(STYLE).convert("RGB")
    params = StyleParams.preset("balanced", size=size, seed=7, device=str(device), iterations=iterations)
    placement = resolve_placement(str(device), "auto")
    _, seconds, peak = meter(lambda: stylize_clip(images, [style], params, placement, seed=7))
    figures.add(f"clip: {frames} frames of {size} px, balanced ({seconds / frames:.2f} s a frame)", seconds, peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="run every step tiny on the CPU (checks the script; the figures mean nothing)")
    args = parser.parse_args()
    if args.cpu_rehearsal:
        device, sizes, balanced, frames, clip_size = torch.device("cpu"), [192, 256], 96, 3, 64
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA GPU here, nothing to check (CPU figures: bench/compare_pastiche.py, "
                  "bench/large_bench.py)")
            return 0
        device, sizes, balanced, frames, clip_size = torch.device(args.device), [1024, 2048, 4096], 512, 48, 256
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"images from {CONTENT.parent}")
    started = time.perf_counter()
    figures, meter = Figures(), Meter(device)
    iterations = 12 if args.cpu_rehearsal else None  # None: the preset's
    default_time = precision_and_layout(figures, meter, device, balanced, iterations)
    memory_by_size(figures, meter, device, sizes, 128 if args.cpu_rehearsal else 512)
    retried = out_of_memory_retry(figures, meter, device, sizes[1]) if device.type == "cuda" else None
    clip(figures, meter, device, frames, clip_size, iterations)
    print(f"\nall checks in {time.perf_counter() - started:.0f} s")
    if device.type == "cuda":
        peak_512 = next((row for row in figures.rows if "bf16, channels_last" in row[0]), None)
        print(f"target: 512 px default result <= 2 s: {default_time:.2f} s" if default_time is not None else "")
        print(f"target: peak <= 1.5 GB at 512 px: {peak_512[2] if peak_512 else '?'}")
        whole_2048 = next((row for row in figures.rows if row[0].startswith(f"{sizes[1]} px, whole")), None)
        print(f"target: {sizes[1]} px without out-of-memory: whole image {whole_2048[2] if whole_2048 else '?'}; "
              f"the retry {'fell back to tiles' if retried else 'did not need to, or failed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
