"""The shared parameter model: ranges, messages, presets and serialisation, as the CLI and the bot rely on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nst_core import ParameterError, StyleParams
from nst_core.params import PRESETS, field_spec, scale_sizes, split_iterations


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("size", 10, "size=10 is not allowed; allowed range: 32 to 4096"),
        ("iterations", 0, "iterations=0"),
        ("style_weight", -1.0, "allowed range: 0 to 1000000"),
        ("optimizer", "sgd", "allowed: lbfgs, adam"),
        ("preserve_colors", "sepia", "allowed: none, luminance, histogram"),
        ("device", "tpu", "allowed: auto, cpu, cuda, cuda:N, mps"),
        ("content_layers", ("relu9_9",), "relu9_9"),
        ("seed", 2**33, "seed="),
        ("tv_weight", float("nan"), "tv_weight=nan"),
        ("size", 300.5, "must be a whole number"),
        ("size", "big", "must be a whole number"),
    ],
)
def test_bad_values_name_field_value_and_range(field, value, expected):
    with pytest.raises(ParameterError) as info:
        StyleParams(**{field: value})
    assert expected in str(info.value)
    assert info.value.field in (field, "content_layers")


def test_layer_weights_must_match_layers():
    with pytest.raises(ParameterError, match="one weight per layer"):
        StyleParams(style_layer_weights=(1.0, 2.0))


def test_presets_differ_in_size_and_budget_and_accept_overrides():
    fast, balanced, best = (StyleParams.preset(n) for n in ("fast", "balanced", "best"))
    assert fast.size < balanced.size < best.size
    assert fast.iterations < balanced.iterations < best.iterations
    tweaked = StyleParams.preset("fast", style_weight=50.0, size=None)
    assert tweaked.style_weight == 50.0 and tweaked.size == PRESETS["fast"]["size"]
    with pytest.raises(ParameterError, match="preset='ultra'"):
        StyleParams.preset("ultra")


def test_round_trip_through_plain_data_and_unknown_keys_refused():
    params = StyleParams(size=200, style_blend=(2.0, 1.0), seed=5)
    data = params.to_dict()
    assert data["style_blend"] == [2.0, 1.0]
    assert StyleParams.from_dict(data) == params
    with pytest.raises(ParameterError, match="unknown parameter"):
        StyleParams.from_dict({**data, "colour": "red"})


def test_style_count_checks():
    StyleParams(style_blend=(1.0, 3.0)).check_styles(2)
    with pytest.raises(ParameterError, match="one weight per style image"):
        StyleParams(style_blend=(1.0, 3.0)).check_styles(3)
    with pytest.raises(ParameterError, match="at least one style image"):
        StyleParams().check_styles(0)
    with pytest.raises(ParameterError, match="at least one weight must be above 0"):
        StyleParams(style_blend=(0.0, 0.0))


def test_field_spec_gives_front_ends_their_limits():
    spec = field_spec("size")
    assert (spec.lo, spec.hi) == (32, 4096)
    assert field_spec("optimizer").choices == ("lbfgs", "adam")
    assert spec.help


def test_pyramid_levels_double_and_end_at_the_requested_size():
    levels = scale_sizes(451, 300, 512, 3)
    assert levels == [(128, 85), (256, 170), (512, 341)]
    # levels under 64 px long edge are dropped, the final one is kept
    assert scale_sizes(128, 85, 128, 4) == [(64, 42), (128, 85)]
    assert scale_sizes(300, 451, 40, 3) == [(27, 40)]


def test_iterations_are_shared_with_most_at_coarse_levels():
    counts = split_iterations(300, 3)
    assert sum(counts) == 300 and counts[0] > counts[1] > counts[2] >= 1
    assert split_iterations(3, 3) == [1, 1, 1]
    assert split_iterations(50, 1) == [50]


def test_importing_the_package_does_not_load_torch():
    code = ("import sys, nst_core, nst_core.images, nst_core.params; "
            "from nst_core import StyleParams; StyleParams(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_thin_images_drop_coarse_levels_and_are_refused_when_the_result_would_vanish() -> None:
    from nst_core.errors import ImageTooSmallError
    from nst_core.params import MIN_LEVEL_SIDE, check_content_shape

    # 2000x100 at 512 px: 512x26 is fine, the 256x13 coarse level would vanish in VGG and is dropped
    assert scale_sizes(2000, 100, 512, 3) == [(512, 26)]
    check_content_shape(2000, 100, 512)
    with pytest.raises(ImageTooSmallError) as info:
        check_content_shape(2000, 16, 64)
    message = str(info.value)
    assert info.value.role == "content"
    assert "2000x16 px" in message and "64x1 px" in message and f"at least {MIN_LEVEL_SIDE} px" in message
    assert "size 2000 or more" in message
    with pytest.raises(ImageTooSmallError, match="too long and thin"):
        check_content_shape(40000, 16, 512)
