"""Render the README gallery with this engine: for each (photo, painting) pair, run `nst stylize` at the balanced
preset and compose a strip photo | painting | result, all the same height, as a JPEG in docs/gallery/.

Usage (through scripts/make_gallery, which sets up .venv and runs this under `nice`):

    scripts/make_gallery [--images ../shared/images] [--out docs/gallery] [--work build/gallery] [--height 280]
                         [--only NAME ...] [--compose-only]

The full-size results stay in --work (git-ignored); only the strips go into the repository. Prints the time each
`nst stylize` took. The seed is fixed so the strips can be reproduced on the CPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

# name -> (photo, painting); the strips are docs/gallery/NAME.jpg
PAIRS: dict[str, tuple[str, str]] = {
    "astronaut-starry_night": ("astronaut.png", "starry_night.jpg"),
    "chelsea-wave": ("chelsea.png", "wave_crop.jpg"),
    "chelsea-the_scream": ("chelsea.png", "the_scream.jpg"),
}
PRESET = "balanced"
SEED = 1
GAP = 6  # white pixels between the three panels
QUALITY = 88


def nst_command() -> str:
    """The `nst` console script of the running interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("nst")
    if beside.exists():
        return str(beside)
    found = shutil.which("nst")
    if found is None:
        raise SystemExit("gallery: the `nst` command is not installed (run scripts/setup)")
    return found


def render(photo: Path, painting: Path, out: Path) -> float:
    """Run `nst stylize` and return its wall-clock time in seconds."""
    command = [nst_command(), "stylize", str(photo), str(painting), "-o", str(out), "--preset", PRESET,
               "--seed", str(SEED), "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def to_height(image: Image.Image, height: int) -> Image.Image:
    image = image.convert("RGB")
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def strip(paths: list[Path], height: int) -> Image.Image:
    """The images side by side at one height, with white gaps between them."""
    panels = []
    for path in paths:
        with Image.open(path) as image:
            panels.append(to_height(image, height))
    width = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + GAP
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "images",
                        help="folder holding the photos and paintings (default: ../shared/images)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gallery", help="where the strips go")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "gallery",
                        help="where the full-size results go (default: build/gallery, git-ignored)")
    parser.add_argument("--height", type=int, default=280, help="strip height in pixels (default: 280)")
    parser.add_argument("--only", nargs="+", choices=sorted(PAIRS), help="render only these strips")
    parser.add_argument("--compose-only", action="store_true",
                        help="do not render; compose strips from the results already in --work")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.only or PAIRS:
        photo_name, painting_name = PAIRS[name]
        photo, painting = args.images / photo_name, args.images / painting_name
        result = args.work / f"{name}.png"
        if not args.compose_only:
            seconds = render(photo, painting, result)
            print(f"{name}: nst stylize --preset {PRESET} --seed {SEED} took {seconds:.1f} s", flush=True)
        target = args.out / f"{name}.jpg"
        strip([photo, painting, result], args.height).save(target, quality=QUALITY, optimize=True, progressive=True)
        print(f"{name}: {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} "
              f"({target.stat().st_size // 1024} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
