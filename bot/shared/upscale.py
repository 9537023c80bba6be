"""What the Upscale x2 button asks for: the delivered picture again, at twice its long edge, with detail added.

The engine does the work (`run_job(continue_from=...)` starts from the picture and runs only the top level); this
module decides the job's size and iteration budget from the finished job, torch-free, and refuses what cannot be
made larger here.

- Size: twice the delivered image's long edge (what the member got, which may be smaller than the size asked for
  when the result had to be shrunk to fit the upload limit), capped at the server's `max_upscale_size`; a picture
  already at (or above) that size is refused.
- Iterations: the top level's share of the earlier job's budget (`split_iterations`, as the engine split it): the
  picture already has the coarse structure the lower levels built, so the upscale needs only the top pass, and that
  share is what a fresh run at the new size would give its own top level (a `balanced` job: 42 of its 300). The
  job runs as one level (`scales` 1), so a Re-roll of it, or an Upscale of the upscale, gets the same budget again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bot.shared.options import Limits
from bot.shared.refusals import UserFacingError
from nst_core.params import StyleParams, scale_sizes, split_iterations

__all__ = ["UPSCALE_FACTOR", "Upscale", "continued_limits", "plan_upscale"]

#: How much larger the Upscale button makes the delivered picture (its long edge).
UPSCALE_FACTOR = 2


@dataclass(frozen=True)
class Upscale:
    """The follow-up job's parameters and what the reply says about them."""

    params: StyleParams  # `size`: the result's long edge (its shape is the content's, as for every job)
    notes: tuple[str, ...] = ()


def plan_upscale(params: StyleParams, width: int, height: int, max_size: int) -> Upscale:
    """The upscale of a `width` x `height` delivered still made with `params` (as the earlier job ran them), at most
    `max_size` px on its long edge. Raises UserFacingError when the picture is already that large."""
    long_edge = max(width, height)
    if long_edge >= max_size:
        raise UserFacingError(f"this picture ({width}x{height} px) is already at this server's largest size, "
                              f"{max_size} px; it cannot be upscaled further")
    wanted = long_edge * UPSCALE_FACTOR
    size = min(wanted, max_size)
    notes = () if size == wanted else (f"{wanted} px would be above this server's largest upscale size: capped at "
                                       f"{size} px",)
    levels = len(scale_sizes(width, height, params.size, params.scales))
    top_share = split_iterations(params.iterations, levels)[-1]
    return Upscale(params=params.replace(size=size, iterations=top_share, scales=1), notes=notes)


def continued_limits(limits: Limits) -> Limits:
    """The limits a job that continues an earlier result (an upscale, or a Re-roll of one) is held to: its size by
    the upscale limit, not by the largest size a member may ask /stylize for; everything else as it is."""
    return dataclasses.replace(limits, max_size=limits.max_upscale_size)
