"""The engine on real (bundled) VGG-19 weights at test sizes: it stylises, keeps the photo, is deterministic,
stops when asked, preserves colours on request, blends styles and handles out-of-memory by shrinking."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_core import JobCancelled, NotAnImageError, ParameterError, StyleParams, run_job
from nst_core.color import rgb_to_yiq
from nst_core.errors import ImageTooSmallError
from nst_core.losses import STYLE_TARGETS
from nst_core.metrics import content_distance as _content_distance
from nst_core.metrics import style_distance as _style_distance
from nst_core.optimize import image_to_tensor

# 64-96 px and a few tens of iterations: each run takes one or two seconds on a 2-core CPU.
SMALL = {"size": 96, "iterations": 40, "scales": 2, "device": "cpu", "seed": 1, "early_stop": 0.0}


def content_distance(result: Image.Image, content: Image.Image) -> float:
    return _content_distance(result, content, edge=96)  # the yardstick at the results' own size


def style_distance(result: Image.Image, style: Image.Image) -> float:
    return _style_distance(result, style, edge=96)


def _run(content: bytes, styles: list[bytes], **overrides: object):
    events = []
    result = run_job(StyleParams(**{**SMALL, **overrides}), content, styles, progress=events.append)
    return result, events, Image.open(io.BytesIO(result.image)).convert("RGB")


def test_result_has_requested_size_and_moves_to_the_style_while_keeping_the_content(
        content_bytes, style_bytes, content_image, style_image):
    result, _events, image = _run(content_bytes, [style_bytes])
    assert (result.width, result.height) == image.size == (96, 64)
    assert result.format == "png" and result.iterations == 40
    # Style: much closer to the painting's Gram statistics than the photo itself is.
    assert style_distance(image, style_image) < 0.5 * style_distance(content_image, style_image)
    # Content: the photo's structure is kept - far closer to the photo than the painting is.
    assert content_distance(image, content_image) < 0.5 * content_distance(style_image, content_image)


def test_loss_falls_within_a_level(content_bytes, style_bytes):
    _, events, _ = _run(content_bytes, [style_bytes], scales=1, size=64, iterations=30)
    totals = [e.losses["total"] for e in events if e.kind == "iteration"]
    assert len(totals) == 30
    assert totals[-1] < 0.5 * totals[0]


def test_progress_events_count_every_iteration_with_losses_and_eta(content_bytes, style_bytes):
    _, events, _ = _run(content_bytes, [style_bytes], size=128, iterations=20)  # levels 64 and 128 px
    its = [e for e in events if e.kind == "iteration"]
    assert [e.iteration for e in its] == list(range(1, 21))
    assert {e.scale for e in its} == {1, 2} and all(e.scales == 2 for e in its)
    assert set(its[0].losses) == {"content", "style", "tv", "total"}
    assert its[-1].eta == pytest.approx(0.0, abs=1e-6) and its[0].eta > 0
    assert its[-1].fraction == 1.0
    preview = its[10].preview(32)
    assert max(preview.size) == 32
    assert [e.message for e in events if e.kind == "scale"][1].startswith("scale 2/2: 128x85 px")


def test_same_seed_same_output_on_cpu_and_other_seed_differs(content_bytes, style_bytes):
    a, _, _ = _run(content_bytes, [style_bytes], init="noise", seed=11, size=64, iterations=10)
    b, _, _ = _run(content_bytes, [style_bytes], init="noise", seed=11, size=64, iterations=10)
    c, _, _ = _run(content_bytes, [style_bytes], init="noise", seed=12, size=64, iterations=10)
    assert a.image == b.image
    assert a.image != c.image


def test_missing_seed_is_chosen_and_reported_so_a_reroll_can_be_reproduced(content_bytes, style_bytes):
    result, _, _ = _run(content_bytes, [style_bytes], seed=None, size=64, iterations=3, scales=1)
    assert isinstance(result.params["seed"], int)
    again, _, _ = _run(content_bytes, [style_bytes], seed=result.params["seed"], size=64, iterations=3, scales=1)
    assert again.image == result.image


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cancel_stops_within_one_iteration(content_bytes, style_bytes, optimizer):
    seen = []
    stop = {"flag": False}

    def progress(event):
        if event.kind == "iteration":
            seen.append(event.iteration)
            if event.iteration == 3:
                stop["flag"] = True

    with pytest.raises(JobCancelled) as info:
        run_job(StyleParams(**{**SMALL, "optimizer": optimizer}), content_bytes, [style_bytes],
                progress=progress, should_cancel=lambda: stop["flag"])
    assert seen == [1, 2, 3]
    assert info.value.iteration == 3


def test_cancel_is_checked_inside_the_lbfgs_closure(content_bytes, style_bytes):
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        # 1st call: before iteration 1; 2nd call: inside its closure (a loss evaluation).
        return calls["n"] >= 2

    with pytest.raises(JobCancelled) as info:
        run_job(StyleParams(**SMALL), content_bytes, [style_bytes], should_cancel=should_cancel)
    assert info.value.iteration == 0  # stopped during the first iteration, not after it


def _chroma_distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of the I/Q (colour) channels, with b resized to a."""
    ta = rgb_to_yiq(image_to_tensor(a))[:, 1:]
    tb = rgb_to_yiq(image_to_tensor(b.resize(a.size, Image.Resampling.LANCZOS)))[:, 1:]
    return float((ta - tb).abs().mean())


def _mean_colour_distance(a: Image.Image, b: Image.Image) -> float:
    ta, tb = image_to_tensor(a), image_to_tensor(b)
    return float((ta.mean((2, 3)) - tb.mean((2, 3))).abs().sum())


def test_colour_modes_keep_the_photos_colours(content_bytes, style_bytes, content_image, style_image):
    _, _, plain = _run(content_bytes, [style_bytes])
    _, _, lum = _run(content_bytes, [style_bytes], preserve_colors="luminance")
    _, _, hist = _run(content_bytes, [style_bytes], preserve_colors="histogram")
    plain_chroma = _chroma_distance(plain, content_image)
    # luminance-only transfer takes the chroma from the photo: nearly identical colour channels
    assert _chroma_distance(lum, content_image) < 0.3 * plain_chroma
    # histogram matching: the palette follows the photo (mean colour and chroma both closer)
    assert _chroma_distance(hist, content_image) < 0.8 * plain_chroma
    assert _mean_colour_distance(hist, content_image) < 0.5 * _mean_colour_distance(plain, content_image)
    # ... and both still carry the painting's texture (Gram distance to the luminance-neutral style falls)
    for image in (lum, hist):
        assert style_distance(image, style_image) < style_distance(content_image, style_image)


def test_blend_weights_pull_toward_the_heavier_style(content_bytes, style_bytes, wave_bytes, style_image,
                                                      wave_image):
    _, _, starry_heavy = _run(content_bytes, [style_bytes, wave_bytes], style_blend=(0.9, 0.1))
    _, _, wave_heavy = _run(content_bytes, [style_bytes, wave_bytes], style_blend=(0.1, 0.9))
    assert style_distance(starry_heavy, style_image) < style_distance(wave_heavy, style_image)
    assert style_distance(wave_heavy, wave_image) < style_distance(starry_heavy, wave_image)


def test_style_scale_changes_the_result(content_bytes, style_bytes):
    a, _, _ = _run(content_bytes, [style_bytes], style_scale=0.5, scales=1, size=64, iterations=10)
    b, _, _ = _run(content_bytes, [style_bytes], style_scale=2.0, scales=1, size=64, iterations=10)
    assert a.image != b.image


def test_style_targets_are_cached_across_jobs(content_bytes, style_bytes):
    _run(content_bytes, [style_bytes], size=64, iterations=2, scales=1)
    before = len(STYLE_TARGETS.entries)
    _run(content_bytes, [style_bytes], size=64, iterations=2, scales=1, seed=99)
    assert len(STYLE_TARGETS.entries) == before


def test_bad_inputs_raise_their_specific_errors(content_bytes, style_bytes):
    with pytest.raises(NotAnImageError) as info:
        run_job(StyleParams(**SMALL), content_bytes, [style_bytes, b"hello, not a picture"])
    assert info.value.role == "style 2" and str(info.value).startswith("style 2 image is not an image")
    with pytest.raises(ParameterError, match="style_blend"):
        run_job(StyleParams(**{**SMALL, "style_blend": (1.0, 2.0)}), content_bytes, [style_bytes])
    banner = io.BytesIO()
    Image.new("RGB", (2000, 16), (200, 10, 10)).save(banner, "PNG")
    with pytest.raises(ImageTooSmallError, match="the result would be 64x1 px"):  # not a RuntimeError from VGG
        run_job(StyleParams(**{**SMALL, "size": 64}), banner.getvalue(), [style_bytes])


def test_output_fitted_to_a_byte_limit(content_bytes, style_bytes):
    result, _, image = _run(content_bytes, [style_bytes], size=128, iterations=4, scales=1)
    limit = len(result.image) // 2
    fitted = run_job(StyleParams(**{**SMALL, "size": 128, "iterations": 4, "scales": 1}), content_bytes,
                     [style_bytes], max_output_bytes=limit)
    assert len(fitted.image) <= limit
    assert fitted.format in ("jpeg", "webp") and fitted.notes
    assert Image.open(io.BytesIO(fitted.image)).size == image.size


def test_gpu_out_of_memory_retries_smaller_and_reports_it(content_bytes, style_bytes):
    # There is no GPU here, so a real CUDA allocation failure cannot happen: this stands in for one by raising
    # torch's own OutOfMemoryError from inside the optimisation loop whenever the working size is above 70 px.
    current = {"width": 0}
    events = []

    def progress(event):
        events.append(event)
        current["width"] = max(event.width, event.height)

    def should_cancel():
        if current["width"] > 70:
            current["width"] = 0
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return False

    params = StyleParams(**{**SMALL, "size": 100, "scales": 1, "iterations": 3, "min_size": 50})
    result = run_job(params, content_bytes, [style_bytes], progress=progress, should_cancel=should_cancel)
    downsized = [e for e in events if e.kind == "downsized"]
    assert [e.message for e in downsized] == ["out of GPU memory at 100 px; retrying at 75 px",
                                              "out of GPU memory at 75 px; retrying at 56 px"]
    assert max(result.width, result.height) == 56 and result.params["size"] == 56
    assert len(result.notes) == 2


def test_weights_from_a_file_path_and_a_clear_error_when_missing(tmp_path: Path, content_bytes, style_bytes):
    from nst_core import WeightsError
    from nst_core.weights import bundled_weights_path, load_weights

    copy = tmp_path / "vgg.bin"
    copy.write_bytes(bundled_weights_path().read_bytes())
    a = load_weights(str(copy))
    b = load_weights("bundled")
    assert a.preprocessing == "caffe" and torch.equal(a.convs[15][0], b.convs[15][0])
    # a torchvision-layout state dict is accepted too, with ImageNet preprocessing
    tv_file = tmp_path / "tv.pth"
    index = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    state = {}
    for i, (w, bias) in zip(index, b.convs, strict=True):
        state[f"features.{i}.weight"], state[f"features.{i}.bias"] = w, bias
    torch.save(state, tv_file)
    assert load_weights(str(tv_file)).preprocessing == "imagenet"
    with pytest.raises(WeightsError, match="does not exist"):
        run_job(StyleParams(**{**SMALL, "weights": str(tmp_path / "nope.pth")}), content_bytes, [style_bytes])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(str(junk))


def test_bundled_weights_are_the_known_file():
    from nst_core.weights import BUNDLED_SHA256, bundled_weights_path, sha256_file

    assert sha256_file(bundled_weights_path()) == BUNDLED_SHA256


def test_a_result_continued_at_twice_the_size_keeps_its_picture_and_runs_the_top_level_only(content_bytes,
                                                                                        style_bytes):
    # what an Upscale x2 asks of the engine: the delivered image, twice as large, with detail added
    small = run_job(StyleParams(size=64, iterations=20, scales=1, device="cpu", seed=4), content_bytes, [style_bytes])
    events = []
    params = StyleParams(size=128, iterations=8, scales=2, device="cpu", seed=9, early_stop=0.0)
    bigger = run_job(params, content_bytes, [style_bytes], continue_from=small.image, progress=events.append)
    fresh = run_job(params, content_bytes, [style_bytes])
    assert max(bigger.width, bigger.height) == 128 and bigger.iterations == 8
    assert {(e.width, e.height) for e in events if e.kind == "iteration"} == {(bigger.width, bigger.height)}
    start = Image.open(io.BytesIO(small.image)).convert("RGB").resize((bigger.width, bigger.height))
    # it stays that picture (closer to the enlarged start than a fresh run of the same budget is)
    continued = image_to_tensor(Image.open(io.BytesIO(bigger.image)))
    from_scratch = image_to_tensor(Image.open(io.BytesIO(fresh.image)))
    target = image_to_tensor(start)
    assert float((continued - target).abs().mean()) < 0.7 * float((from_scratch - target).abs().mean())


def test_continuing_an_animation_is_refused(content_image, style_bytes):
    frames = [content_image.resize((64, 64)).rotate(angle) for angle in (0, 5, 10)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ParameterError, match="continue_from"):
        run_job(StyleParams(size=64, iterations=2, scales=1, device="cpu"), buf.getvalue(), [style_bytes],
                continue_from=b"whatever")
