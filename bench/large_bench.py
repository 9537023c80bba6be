"""Peak memory and time against output size, for the whole-image path and the bounded (tiled) path.

Each configuration runs in a fresh process (so its peak resident memory is its own, read with os.wait4): one scale
at the output size, `--iterations` L-BFGS steps from the content, chelsea.png (3:2) with starry_night.jpg, fp32 on
the CPU unless `--device` says otherwise (on CUDA the peak is torch.cuda.max_memory_allocated). It prints one row
per configuration: tiles, peak memory, set-up, seconds per iteration, total.

    python bench/large_bench.py                                  # 512 1024 2048 4096, both paths, 3 iterations
    python bench/large_bench.py --sizes 2048 --paths tiled --iterations 5
    python bench/large_bench.py --whole-up-to 1024               # skip the whole-image path above 1024 px

The whole-image path at 4096 px needs about 30 GB on the CPU (7.5 GB measured at 2048 px, times four), more
than a 24 GB machine has: by default it runs only up to 2048 px and the table says why the row is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "images"
CONTENT, STYLE = IMAGES / "chelsea.png", IMAGES / "starry_night.jpg"


def one(size: int, path: str, iterations: int, tile_size: int, device: str) -> dict[str, float | int | str]:
    """Run one configuration in this process and return its figures (peak memory is read by the parent)."""
    from nst_core.job import run_job
    from nst_core.params import StyleParams
    from nst_core.progress import EventKind, ProgressEvent
    from nst_core.tiles import TileGrid

    params = StyleParams(size=size, scales=1, iterations=iterations, early_stop=0, seed=7, device=device,
                         precision="fp32", tiles="on" if path == "tiled" else "off", tile_size=tile_size)
    stamps: list[float] = []

    def progress(event: ProgressEvent) -> None:
        if event.kind == EventKind.ITERATION:
            stamps.append(time.perf_counter())

    started = time.perf_counter()
    result = run_job(params, CONTENT.read_bytes(), [STYLE.read_bytes()], progress=progress)
    total = time.perf_counter() - started
    per_iteration = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    tiles = len(TileGrid.cover(result.width, result.height, tile_size).tiles) if path == "tiled" else 1
    figures: dict[str, float | int | str] = {
        "size": size, "path": path, "width": result.width, "height": result.height, "tiles": tiles,
        "setup": result.timings["setup"], "per_iteration": per_iteration, "total": total}
    if device.startswith("cuda"):
        import torch

        figures["cuda_peak"] = torch.cuda.max_memory_allocated()
    return figures


def measure(size: int, path: str, args: argparse.Namespace) -> dict[str, float | int | str]:
    """One configuration in a child process: its figures and its peak resident memory."""
    command = [sys.executable, __file__, "--one", str(size), path, "--iterations", str(args.iterations),
               "--tile-size", str(args.tile_size), "--device", args.device]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        return {"size": size, "path": path, "error": f"exit {child.returncode}"}
    figures: dict[str, float | int | str] = json.loads(output.strip().splitlines()[-1])
    figures["peak_rss"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    return figures


def row(f: dict[str, float | int | str]) -> str:
    if "error" in f:
        return f"| {f['size']} | {f['path']} | failed: {f['error']} | | | | |"
    peak = f.get("cuda_peak", f["peak_rss"])
    return (f"| {f['width']}x{f['height']} | {f['path']} | {f['tiles']} | {float(peak) / 1e9:.2f} GB | "
            f"{float(f['setup']):.1f} s | {float(f['per_iteration']):.1f} s | {float(f['total']):.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--paths", nargs="+", choices=("whole", "tiled"), default=["whole", "tiled"])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--whole-up-to", type=int, default=2048, help="skip the whole-image path above this size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.iterations, args.tile_size, args.device)))
        return
    print(f"one scale, {args.iterations} L-BFGS iterations, tiles of {args.tile_size} px, {args.device}, fp32")
    print("| output | path | tiles | peak memory | set-up | per iteration | total |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for path in args.paths:
            if path == "whole" and size > args.whole_up_to:
                print(f"| {size} px | whole | not run: needs about {7.5 * (size / 2048) ** 2:.0f} GB "
                      "(7.5 GB at 2048 px, growing with the pixels) | | | | |", flush=True)
                continue
            print(row(measure(size, path, args)), flush=True)


if __name__ == "__main__":
    main()
