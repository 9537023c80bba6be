"""The `nst` command as a user meets it: real engine, bundled weights, tiny runs (64 px, 8 iterations, one scale).

Most tests run `python -m nst_core` in a subprocess, so they see exactly what a shell user sees: exit status, the
one `wrote` line on stdout, one-line errors on stderr and never a traceback. A few call `main()` and the pure
helpers in-process to check the mapping from options to `StyleParams` directly.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from nst_core.cli import build_params, build_parser, main
from nst_core.params import PRESETS, StyleParams

DATA = Path(__file__).parent / "data"
CONTENT = DATA / "chelsea_128.png"
STARRY = DATA / "starry_night_128.jpg"
WAVE = DATA / "wave_128.jpg"
TINY = ["--size", "64", "--iterations", "8", "--scales", "1", "--device", "cpu"]


def nst(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nst_core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def stylize(content: Path, styles: list[Path], out: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return nst("stylize", content, *styles, "-o", out, *TINY, *extra)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nst: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One end-to-end run shared by several tests: seed 7, a frame every 4 iterations."""
    out = tmp_path_factory.mktemp("seeded") / "cat.png"
    return stylize(CONTENT, [STARRY], out, "--seed", "7", "--save-every", "4"), out


# ---- end to end -----------------------------------------------------------------------------------------------------


def test_stylize_writes_a_png_at_the_requested_size_and_reports_it(seeded_run):
    proc, out = seeded_run
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert max(image.size) == 64
        width, height = image.size
    with Image.open(CONTENT) as content:  # the photo's aspect ratio is kept
        assert abs(width / height - content.width / content.height) < 0.05
    assert proc.stdout.splitlines() == [proc.stdout.strip()]  # exactly one line on stdout
    assert proc.stdout.startswith(f"wrote {out} ({width}x{height}, 8 iterations, ")
    assert proc.stdout.rstrip().endswith(" s, seed 7)")
    assert "scale 1/1" in proc.stderr  # progress messages go to stderr


def test_save_every_writes_full_size_frames_next_to_the_output(seeded_run):
    proc, out = seeded_run
    assert proc.returncode == 0, proc.stderr
    frames = sorted(p.name for p in out.parent.glob("cat-*.png"))
    assert frames == ["cat-0004.png", "cat-0008.png"]
    with Image.open(out) as final, Image.open(out.parent / "cat-0004.png") as frame:
        assert frame.format == "PNG" and frame.size == final.size
    assert proc.stderr.count(str(out.parent)) == 1  # the folder is mentioned once


def test_same_seed_gives_byte_identical_output(seeded_run, tmp_path):
    first_proc, first = seeded_run
    assert first_proc.returncode == 0, first_proc.stderr
    again = tmp_path / "again.png"
    proc = stylize(CONTENT, [STARRY], again, "--seed", "7", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: no bar, no messages
    assert again.read_bytes() == first.read_bytes()


def test_jpg_extension_writes_a_jpeg(tmp_path):
    out = tmp_path / "out.jpg"
    proc = stylize(CONTENT, [STARRY], out, "--seed", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"
    with Image.open(out) as image:
        assert image.format == "JPEG" and max(image.size) == 64


def test_two_styles_with_a_blend(tmp_path):
    out = tmp_path / "blend.png"
    proc = stylize(CONTENT, [STARRY, WAVE], out, "--style-blend", "3", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out} (")
    with Image.open(out) as image:
        assert max(image.size) == 64


# ---- user errors: one line, exit 2, no traceback --------------------------------------------------------------------


def test_missing_content_file(tmp_path):
    missing = tmp_path / "no-such-photo.png"
    assert_one_line_error(stylize(missing, [STARRY], tmp_path / "out.png"), "does not exist", str(missing),
                          "content image")
    assert not (tmp_path / "out.png").exists()


def test_missing_second_style_file_is_named_by_position(tmp_path):
    missing = tmp_path / "gone.jpg"
    assert_one_line_error(stylize(CONTENT, [STARRY, missing], tmp_path / "out.png"),
                          f"style 2 image '{missing}' does not exist")


def test_parameter_out_of_range_names_the_parameter_and_its_range(tmp_path):
    line = assert_one_line_error(nst("stylize", CONTENT, STARRY, "-o", tmp_path / "out.png", "--size", "5"),
                                 "size", "32 to 4096")
    assert "5" in line


def test_unsupported_output_extension(tmp_path):
    assert_one_line_error(stylize(CONTENT, [STARRY], tmp_path / "out.gif"), ".gif", ".png", ".jpg", ".webp")


def test_missing_output_folder(tmp_path):
    folder = tmp_path / "not-made-yet"
    assert_one_line_error(stylize(CONTENT, [STARRY], folder / "out.png"), f"output folder '{folder}' does not exist")


def test_broker_is_refused_with_one_line_when_the_engine_runs_alone(tmp_path):
    """`python -m nst_core` is the engine without the job system (it imports nothing above it): --broker is refused
    with one line naming the command that has it. The installed `nst` runs it (tests/test_celery.py)."""
    out = tmp_path / "out.png"
    assert_one_line_error(stylize(CONTENT, [STARRY], out, "--broker", "redis://127.0.0.1:6379/0"),
                          "--broker needs the job system", "use the `nst` command")
    assert not out.exists()


def test_text_file_as_content_is_not_an_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("just some notes, not a picture\n")
    out = tmp_path / "out.png"
    assert_one_line_error(stylize(text, [STARRY], out), "not an image", str(text))
    assert not out.exists()


def test_user_errors_and_help_do_not_load_torch(tmp_path):
    """`nst --help` and mistakes caught before the run must be instant: torch is never imported for them."""
    script = f"""
import sys, contextlib, io
from nst_core.cli import main
codes = []
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    codes.append(main(["--help"]))
    codes.append(main(["stylize", "--help"]))
    codes.append(main(["stylize", {str(tmp_path / "none.png")!r}, {str(STARRY)!r}, "-o", "x.png"]))
    codes.append(main(["stylize", {str(CONTENT)!r}, {str(STARRY)!r}, "-o", "x.png", "--scales", "9"]))
    codes.append(main(["stylize", {str(CONTENT)!r}, {str(STARRY)!r}, {str(WAVE)!r}, "-o", "x.png",
                       "--style-blend", "1"]))
print(codes, "torch" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 0, 2, 2, 2] False"


# ---- cancellation ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX-only")
def test_ctrl_c_stops_the_run_cooperatively(tmp_path):
    out = tmp_path / "out.png"
    args = [sys.executable, "-m", "nst_core", "stylize", str(CONTENT), str(STARRY), "-o", str(out),
            "--size", "64", "--scales", "1", "--iterations", "5000", "--early-stop", "0", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        assert proc.stderr is not None
        deadline = time.monotonic() + 90
        while b"scale 1/1" not in seen and time.monotonic() < deadline:  # the optimisation has started
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        assert b"scale 1/1" in seen, seen
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (seen + stderr).decode()
    assert proc.returncode == 130
    assert text.rstrip().endswith("nst: cancelled")
    assert "Traceback" not in text
    assert stdout == b""
    assert not out.exists()


# ---- nst info -------------------------------------------------------------------------------------------------------


def test_info_reports_versions_devices_and_that_the_bundled_weights_load():
    proc = nst("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("nst_core ")
    for fragment in ("Python ", "torch ", "torchvision ", "CUDA: ", "devices: cpu", "auto device: ", "sha256 "):
        assert fragment in out
    assert "weights 'bundled': loads in " in out


def test_info_with_weights_that_do_not_exist_fails_with_the_reason(tmp_path):
    missing = tmp_path / "vgg.pth"
    proc = nst("info", "--weights", missing)
    assert proc.returncode == 1
    assert "does not load" in proc.stdout
    assert "does not exist" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- in-process: the option -> parameter mapping -------------------------------------------------------------------


def test_every_parameter_has_an_option_with_its_range_in_the_help(capsys):
    assert main(["stylize", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for f in dataclasses.fields(StyleParams):
        assert "--" + f.name.replace("_", "-") in help_text
    assert "allowed range: 32 to 4096; default: 512 (balanced preset; fast 256, best 1024)" in help_text
    assert "allowed range: 0 to 4294967295" in help_text  # --seed, written out in full
    assert "allowed: lbfgs, adam; default: lbfgs" in help_text


def test_build_params_applies_only_the_options_given():
    parser = build_parser()
    args = parser.parse_args(["stylize", "c.png", "a.jpg", "b.jpg", "-o", "o.png", "--preset", "fast",
                              "--style-weight", "5", "--seed", "4294967295", "--style-blend", "3", "1",
                              "--content-layers", "relu3_2", "relu4_2", "--content-layer-weights", "1", "2",
                              "--preserve-colors", "luminance"])
    params = build_params(args)
    assert params.style_weight == 5.0
    assert params.seed == 4294967295
    assert params.style_blend == (3.0, 1.0)
    assert params.content_layers == ("relu3_2", "relu4_2")
    assert params.content_layer_weights == (1.0, 2.0)
    assert params.preserve_colors == "luminance"
    # Not given: the preset's values, and the model defaults for everything else.
    assert params == StyleParams.preset("fast", style_weight=5.0, seed=4294967295, style_blend=(3.0, 1.0),
                                        content_layers=("relu3_2", "relu4_2"), content_layer_weights=(1.0, 2.0),
                                        preserve_colors="luminance")
    assert (params.size, params.iterations, params.scales) == tuple(PRESETS["fast"].values())
    defaults = build_params(parser.parse_args(["stylize", "c.png", "s.jpg", "-o", "o.png"]))
    assert defaults == StyleParams.preset("balanced")


def test_main_in_process_runs_and_restores_the_sigint_handler(tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "direct.webp"
    code = main(["stylize", str(CONTENT), str(WAVE), "-o", str(out), *TINY, "--style-weight", "5", "--seed", "3",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip().startswith(f"wrote {out} (") and captured.out.strip().endswith("seed 3)")
    with Image.open(out) as image:
        assert image.format == "WEBP" and max(image.size) == 64
    assert signal.getsignal(signal.SIGINT) is before


def test_main_in_process_returns_2_for_a_bad_parameter(tmp_path, capsys):
    code = main(["stylize", str(CONTENT), str(STARRY), "-o", str(tmp_path / "o.png"), "--optimizer", "sgd"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nst: error: optimizer='sgd' is not allowed; allowed: lbfgs, adam")


def test_max_bytes_that_forces_jpeg_keeps_the_extension_truthful(tmp_path, capsys):
    out = tmp_path / "small.png"
    code = main(["stylize", str(CONTENT), str(STARRY), "-o", str(out), *TINY, "--seed", "3", "--quiet",
                 "--max-bytes", "2500"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = tmp_path / "small.jpg"
    assert not out.exists() and written.stat().st_size <= 2500
    assert captured.out.startswith(f"wrote {written} (")
    assert "re-encoded as JPEG" in captured.err  # the engine's note is passed on


# ---- animations -----------------------------------------------------------------------------------------------------


def _gif(path: Path, frames: int = 3) -> Path:
    base = Image.open(CONTENT).convert("RGB")
    images = [base.crop((4 * t, 0, 4 * t + 96, 96)).resize((64, 64)) for t in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=90, loop=0)
    return path


def test_an_animated_gif_becomes_a_stylised_gif_with_frame_progress(tmp_path):
    out = tmp_path / "moving.gif"
    proc = stylize(_gif(tmp_path / "in.gif"), [STARRY], out, "--frame-iterations", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "frame 3/3" in proc.stderr  # the bar names the frame
    assert "3 frames, 0.3 s" in proc.stdout
    with Image.open(out) as image:
        assert image.format == "GIF" and image.n_frames == 3 and image.info["duration"] == 90


def test_an_animation_written_as_a_still_extension_is_refused_before_any_work(tmp_path):
    proc = stylize(_gif(tmp_path / "in.gif"), [STARRY], tmp_path / "out.png")
    assert_one_line_error(proc, "the content is an animation", ".gif, .webp, .mp4")


def test_max_frames_refuses_a_longer_animation_with_the_numbers(tmp_path):
    proc = stylize(_gif(tmp_path / "in.gif", frames=4), [STARRY], tmp_path / "out.mp4", "--max-frames", "3")
    assert_one_line_error(proc, "4 frames", "the limit is 3")


def test_continue_from_makes_an_earlier_result_larger(tmp_path):
    small = tmp_path / "small.png"
    assert stylize(CONTENT, [STARRY], small).returncode == 0
    proc = stylize(CONTENT, [STARRY], tmp_path / "big.png", "--size", "96", "--continue-from", small)
    assert proc.returncode == 0, proc.stderr
    assert "(96x64, 8 iterations" in proc.stdout
    assert Image.open(tmp_path / "big.png").size == (96, 64)
