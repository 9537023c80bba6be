"""How steady, how stylised and how fast an animation is: our clip path against each frame stylised on its own.

A synthetic clip (a slow pan with a slight zoom over a photo from ../shared/images) is stylised two ways with the
same parameters and seed. For both it prints Lai et al.'s warping error (flow and occlusion mask of the INPUT
frames; lower is steadier), the mean per-frame style and content distances of `nst_core.metrics`, and the wall
time, then the ratios against the issue's targets (warping error <= 0.5x, distances within 1.25x, time <= 0.6x).

    python bench/clip_bench.py                       # 12 frames, 128 px, the fast preset's iterations
    python bench/clip_bench.py --frames 48 --size 256 --device cuda
    python bench/clip_bench.py --temporal-weight 0 100 200 500 --save /tmp/frames   # compare weights, keep frames
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nst_core.animate import stylize_clip
from nst_core.device import resolve_placement
from nst_core.flow import warping_error
from nst_core.metrics import content_distance, style_distance
from nst_core.optimize import stylize
from nst_core.params import StyleParams

IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "images"


def synthetic_clip(photo: Image.Image, frames: int, size: int) -> list[Image.Image]:
    """A pan across the photo's width with a 1.5 % zoom per frame, as a square `size` px clip."""
    photo = photo.convert("RGB")
    side = min(photo.size) * 4 // 5
    travel = (photo.width - side) * 0.5
    out = []
    for t in range(frames):
        crop = side / (1 + 0.015 * t)
        x0 = photo.width * 0.05 + travel * t / max(frames - 1, 1)
        y0 = (photo.height - crop) / 2
        box = (round(x0), round(y0), round(x0 + crop), round(y0 + crop))
        out.append(photo.crop(box).resize((size, size), Image.Resampling.LANCZOS))
    return out


def floats(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image.convert("RGB")).astype(np.float32) / 255.0 for image in images]


def measure(name: str, frames: list[Image.Image], outputs: list[Image.Image], style: Image.Image,
            seconds: float) -> dict[str, float]:
    figures = {
        "warping_error": warping_error(floats(frames), floats(outputs)),
        "style": statistics.mean(style_distance(out, style) for out in outputs),
        "content": statistics.mean(content_distance(out, frame) for out, frame in zip(outputs, frames, strict=True)),
        "seconds": seconds,
    }
    print(f"{name:<28} warping error {figures['warping_error']:.5f}   style {figures['style']:.4f}   "
          f"content {figures['content']:.4f}   {seconds:7.1f} s", flush=True)
    return figures


def save(folder: Path, label: str, frames: list[Image.Image]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    strip = Image.new("RGB", (sum(f.width for f in frames), frames[0].height))
    x = 0
    for frame in frames:
        strip.paste(frame, (x, 0))
        x += frame.width
    strip.save(folder / f"{label}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=120, help="the fast preset's (default 120)")
    parser.add_argument("--scales", type=int, default=2)
    parser.add_argument("--temporal-weight", type=float, nargs="+", default=[StyleParams().temporal_weight])
    parser.add_argument("--frame-iterations", type=int, default=None)
    parser.add_argument("--photo", default=str(IMAGES / "astronaut.png"))
    parser.add_argument("--style", default=str(IMAGES / "starry_night.jpg"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", type=Path, default=None, help="write each run's frames as a strip PNG here")
    args = parser.parse_args()

    frames = synthetic_clip(Image.open(args.photo), args.frames, args.size)
    style = Image.open(args.style).convert("RGB")
    placement = resolve_placement(args.device, args.precision)
    base = StyleParams(size=args.size, iterations=args.iterations, scales=args.scales, seed=args.seed,
                       frame_iterations=args.frame_iterations, device=args.device, precision=args.precision)
    print(f"clip: {args.frames} frames of {args.size} px (pan and zoom over {Path(args.photo).name}), style "
          f"{Path(args.style).name}; {args.iterations} iterations over {args.scales} scales, seed {args.seed}, "
          f"{placement.device} {placement.precision}")

    stylize(frames[0], [style], base.replace(iterations=2), placement, seed=args.seed)  # warm the network up
    started = time.perf_counter()
    alone = [stylize(frame, [style], base, placement, seed=args.seed).image for frame in frames]
    reference = measure("frame by frame", frames, alone, style, time.perf_counter() - started)
    if args.save:
        save(args.save, "input", frames)
        save(args.save, "frame-by-frame", alone)
    for weight in args.temporal_weight:
        params = base.replace(temporal_weight=weight)
        started = time.perf_counter()
        clip = stylize_clip(frames, [style], params, placement, seed=args.seed)
        ours = measure(f"clip, temporal weight {weight:g}", frames, clip.frames, style, time.perf_counter() - started)
        if args.save:
            save(args.save, f"clip-tw{weight:g}", clip.frames)
        ratio = {key: ours[key] / reference[key] for key in ours}
        print(f"{'':<28} ratios to frame by frame: warping error {ratio['warping_error']:.2f} (target <= 0.5), "
              f"style {ratio['style']:.2f} and content {ratio['content']:.2f} (<= 1.25), "
              f"time {ratio['seconds']:.2f} (<= 0.6)", flush=True)


if __name__ == "__main__":
    main()
