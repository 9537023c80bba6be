"""The /stylize options, built from the engine's parameter model, and their server-side check.

Discord's client enforces the option ranges declared here (taken from `nst_core.params.field_spec`, the same ranges
the `nst` CLI uses); discord.py does not, so `build_params` checks everything again through `StyleParams` and then
against the bot's and the server's limits. A preset's own size or iteration budget above a server's limit is
lowered to the limit (and said so); a value the member typed above it is refused with the limit in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from discord import app_commands

from bot.records import BotStore, style_key
from nst_core.clips import ClipLimits
from nst_core.errors import ParameterError
from nst_core.params import PRESETS, StyleParams, field_spec

__all__ = [
    "BLEND_RANGE",
    "COLOR_CHOICES",
    "DEFAULT_BLEND",
    "PRESET_CHOICES",
    "Limits",
    "StylizeOptions",
    "apply_limits",
    "blend_option",
    "blend_weights",
    "build_params",
    "describe_params",
    "describe_styles",
    "option_range",
    "saved_style_choices",
]


def option_range(name: str, kind: type[int] | type[float]) -> Any:
    """`app_commands.Range[kind, lo, hi]` from the engine's documented range of parameter `name`."""
    spec = field_spec(name)
    assert spec.lo is not None and spec.hi is not None, name
    lo, hi = (int(spec.lo), int(spec.hi)) if kind is int else (float(spec.lo), float(spec.hi))
    return app_commands.Range[kind, lo, hi]  # type: ignore[valid-type]


#: The range of /stylize's `blend` (the second style's share; not an engine parameter: it becomes `style_blend`).
BLEND_RANGE = (0.0, 1.0)
#: The second style's share when a second style is given without a `blend`.
DEFAULT_BLEND = 0.5


def blend_option() -> Any:
    """`app_commands.Range[float, 0, 1]` for /stylize's `blend` (Discord's client enforces it)."""
    return app_commands.Range[float, BLEND_RANGE[0], BLEND_RANGE[1]]


def blend_weights(blend: float | None) -> tuple[float, float]:
    """`StyleParams.style_blend` for two styles: (1 - blend, blend), the second style getting `blend` (checked
    again here: discord.py does not enforce the option's range; raises ParameterError)."""
    blend = DEFAULT_BLEND if blend is None else blend
    lo, hi = BLEND_RANGE
    if not lo <= blend <= hi:
        raise ParameterError("blend", blend, f"allowed range: {lo:g} to {hi:g} (the second style's share)")
    return round(hi - blend, 9), blend


def describe_styles(weights: tuple[float, ...] | list[float], names: list[str] | None = None) -> str:
    """The headline's part on several styles: 'styles “a.jpg” (70 %) and “b.jpg” (30 %)', or without names
    '2 styles (70 % and 30 %)' (the weights normalised, as the engine uses them)."""
    total = sum(weights) or 1.0
    shares = [f"{w / total * 100:.0f} %" for w in weights]
    if names is None:
        return f"{len(shares)} styles ({_and(shares)})"
    return "styles " + _and([f"“{n}” ({share})" for n, share in zip(names, shares, strict=True)])


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def option_help(name: str) -> str:
    """A Discord option description (at most 100 characters) from the engine's help text."""
    text = field_spec(name).help
    return text if len(text) <= 100 else text[:99] + "…"


PRESET_CHOICES = [app_commands.Choice(name=f"{name} ({p['size']} px, {p['iterations']} iterations)", value=name)
                  for name, p in PRESETS.items()]
COLOR_CHOICES = [app_commands.Choice(name=c, value=c) for c in field_spec("preserve_colors").choices or ()]


@dataclass(frozen=True)
class StylizeOptions:
    """What the member chose; None: not given (the preset decides)."""

    preset: str | None = None
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    size: int | None = None
    iterations: int | None = None
    preserve_colors: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Limits:
    """The effective limits for one request: the bot's, lowered by the server's own settings."""

    max_size: int
    max_iterations: int
    default_preset: str
    clip: ClipLimits  # an animated content: frames, seconds, pixels
    max_clip_size: int  # an animation's output long edge
    max_upscale_size: int  # the Upscale x2 button's largest result (long edge)


def build_params(options: StylizeOptions, limits: Limits) -> tuple[StyleParams, list[str]]:
    """Validated parameters (raises ParameterError with a message for the member) and notes about any capping."""
    preset = options.preset or limits.default_preset
    overrides = {name: getattr(options, name) for name in
                 ("content_weight", "style_weight", "tv_weight", "size", "iterations", "preserve_colors", "seed")}
    params = StyleParams.preset(preset, **overrides)
    typed = frozenset(name for name, value in overrides.items() if value is not None)
    return apply_limits(params, limits, typed=typed, origin=f"the {preset} preset's")


def apply_limits(params: StyleParams, limits: Limits, *, typed: frozenset[str] = frozenset(),
                 origin: str = "the") -> tuple[StyleParams, list[str]]:
    """Hold `params` to the server's size and iteration limits: a value the member typed (`typed`) above a limit is
    refused (ParameterError); any other (a preset's, an earlier job's) is lowered to it, with a note saying so."""
    notes: list[str] = []
    for name, limit, unit in (("size", limits.max_size, " px"), ("iterations", limits.max_iterations, "")):
        value = getattr(params, name)
        if value <= limit:
            continue
        if name in typed:
            raise ParameterError(name, value, f"this server allows at most {limit}{unit}")
        params = params.replace(**{name: limit})
        notes.append(f"{name} lowered from {origin} {value}{unit} to this server's limit of {limit}{unit}")
    return params, notes


def describe_params(params: StyleParams | dict[str, Any], preset: str | None = None) -> str:
    """A short summary for the reply headline: 'balanced · 512 px · style 5'."""
    data = params.to_dict() if isinstance(params, StyleParams) else params
    parts = [preset] if preset else []
    parts += [f"{data['size']} px", f"style {data['style_weight']:g}"]
    if data.get("preserve_colors") not in (None, "none"):
        parts.append(f"colours: {data['preserve_colors']}")
    return " · ".join(parts)


async def saved_style_choices(store: BotStore, guild_id: int | None, typed: str) -> list[app_commands.Choice[str]]:
    """What to offer while a member types a saved style's name: the server's styles whose name contains it."""
    if guild_id is None:
        return []
    typed = style_key(typed)
    styles = await store.styles(guild_id)
    return [app_commands.Choice(name=s.name, value=s.name) for s in styles if typed in s.name][:25]
