"""Optical flow between an animation's input frames, the masks that say where it can be trusted, and warping.

Classical flow, so nothing is downloaded: OpenCV's DIS (`cv2.DISOpticalFlow_create`) on the grey input frames,
forward and backward. Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (2016), weight the temporal
loss with their consistency check, here for frame t seen from frame t-1 (b: flow t -> t-1, f: flow t-1 -> t):

    occluded         where |b + f(x + b)|^2 > 0.01 (|b|^2 + |f(x + b)|^2) + 0.5
    motion boundary  where |grad b_u|^2 + |grad b_v|^2 > 0.01 |b|^2 + 0.002

and the weight c is 0 there, 1 elsewhere. `warping_error` is the flicker yardstick of Lai et al. (ECCV 2018):
the masked mean squared difference between output frame t and output frame t+1 warped onto t, with flow and mask
from the INPUT frames, averaged over t.

Images here are numpy arrays: RGB uint8 (H, W, 3) or float32 in 0..1; flows are float32 (H, W, 2) in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FramePair", "consistency_mask", "dis_flow", "frame_pair", "warp", "warping_error"]

#: DIS preset: MEDIUM is the documented balance of speed and accuracy (a 256 px pair takes a few ms).
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def _grey(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def dis_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Flow from `source` to `target`: source(x) ~ target(x + flow(x)), in pixels, (H, W, 2) float32."""
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    return dis.calc(_grey(source), _grey(target), None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` resampled at x + flow(x) (bilinear, edges replicated): what pixel x sees of `image` along `flow`."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image), grid_x + flow[..., 0], grid_y + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s weights for frame t: 1 where `backward` (t -> t-1) is consistent with `forward` (t-1 -> t)
    and not on a motion boundary, 0 elsewhere. (H, W) float32."""
    forward_there = warp(forward, backward)  # f(x + b(x))
    round_trip = backward + forward_there
    occluded = (round_trip ** 2).sum(-1) > 0.01 * ((backward ** 2).sum(-1) + (forward_there ** 2).sum(-1)) + 0.5
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = du_x ** 2 + du_y ** 2 + dv_x ** 2 + dv_y ** 2 > 0.01 * (backward ** 2).sum(-1) + 0.002
    return (~(occluded | boundary)).astype(np.float32)


@dataclass(frozen=True)
class FramePair:
    """How frame t relates to an earlier frame s: `flow` t -> s (to warp s onto t) and where it holds (`mask`)."""

    flow: np.ndarray  # (H, W, 2) float32
    mask: np.ndarray  # (H, W) float32, 1 = trusted

    def warp(self, earlier: np.ndarray) -> np.ndarray:
        """Frame s's image (for example its stylised result) moved onto frame t."""
        return warp(earlier, self.flow)


def frame_pair(later: np.ndarray, earlier: np.ndarray) -> FramePair:
    """The flow from `later` to `earlier` (input frames, the same size) and its consistency mask."""
    backward = dis_flow(later, earlier)
    forward = dis_flow(earlier, later)
    return FramePair(flow=backward, mask=consistency_mask(backward, forward))


def warping_error(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Lai et al.'s warping error of `outputs` (float32 RGB in 0..1) against their `inputs`: lower is steadier."""
    if len(inputs) != len(outputs) or len(inputs) < 2:
        raise ValueError("warping_error needs as many outputs as inputs, at least two of each")
    errors = []
    for t in range(len(inputs) - 1):
        pair = frame_pair(inputs[t], inputs[t + 1])  # flow t -> t+1: output t+1 moved onto t
        moved = pair.warp(outputs[t + 1])
        weight = pair.mask[..., None]
        errors.append(float((weight * (outputs[t] - moved) ** 2).sum() / max(weight.sum() * 3, 1.0)))
    return float(np.mean(errors))
