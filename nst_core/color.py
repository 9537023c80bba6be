"""Colour preservation, the two ways of Gatys et al., "Preserving Color in Neural Artistic Style Transfer" (2016).

- luminance-only transfer: style and content are reduced to their luminance (the style's luminance matched to the
  content's mean and spread), the style is transferred on that, and the result's luminance is recombined with the
  content's chroma (YIQ).
- histogram matching: before optimising, each style image's colours are mapped so their mean and covariance equal
  the content's (x' = A (x - mu_s) + mu_c with A = Sigma_c^1/2 Sigma_s^-1/2).

The engine picks one `ColourStrategy` per job (`colour_strategy(params.preserve_colors)`): it prepares each style
image and the content target of a level, and finishes the result (and every preview). Images are (N, 3, H, W) RGB
tensors in 0..1.
"""

from __future__ import annotations

import torch

__all__ = [
    "ColourStrategy",
    "colour_strategy",
    "combine_luminance", "luminance", "match_histogram", "match_luminance", "rgb_to_yiq",
    "yiq_to_rgb",
]

_RGB_TO_YIQ = torch.tensor([
    [0.299, 0.587, 0.114],
    [0.595716, -0.274453, -0.321263],
    [0.211456, -0.522591, 0.311135],
])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image.device, image.dtype), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The luminance Y as a grey RGB image (3 equal channels)."""
    y = rgb_to_yiq(image)[:, :1]
    return y.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey style luminance with the content luminance's mean and standard deviation."""
    ys, yc = rgb_to_yiq(style)[:, :1], rgb_to_yiq(content)[:, :1]
    matched = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def combine_luminance(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The result's luminance with the content's chroma (I, Q), back in RGB."""
    yiq = torch.cat([rgb_to_yiq(result)[:, :1], rgb_to_yiq(content)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrtm(matrix: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-8)
    power = -0.5 if inverse else 0.5
    return vectors @ torch.diag(values.pow(power)) @ vectors.T


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Style colours mapped to the content's colour mean and covariance (per image, float64 for stability)."""
    s = style.double().reshape(3, -1)
    c = content.double().reshape(3, -1)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=torch.float64) * 1e-5
    cov_s = torch.cov(s) + eye
    cov_c = torch.cov(c) + eye
    transform = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    out = transform @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype).clamp(0, 1)


class ColourStrategy:
    """Keep the result's own colours (`preserve_colors="none"`): nothing to prepare, nothing to finish."""

    def prepare_style(self, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """The style image as the style term should see it, given the content at the same level."""
        return style

    def prepare_content(self, content: torch.Tensor) -> torch.Tensor:
        """The content as the content term (and the first level's starting image) should see it."""
        return content

    def finish(self, result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """The image a user sees from the optimised `result` and the level's original `content`."""
        return result


class LuminanceTransfer(ColourStrategy):
    """Optimise on luminance only; the result takes the content's chroma."""

    def prepare_style(self, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return match_luminance(style, content)

    def prepare_content(self, content: torch.Tensor) -> torch.Tensor:
        return luminance(content)

    def finish(self, result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return combine_luminance(result, content)


class HistogramMatch(ColourStrategy):
    """Map each style image's colours to the content's before optimising."""

    def prepare_style(self, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return match_histogram(style.cpu(), content.cpu()).to(style.device)


_STRATEGIES: dict[str, type[ColourStrategy]] = {
    "none": ColourStrategy, "luminance": LuminanceTransfer, "histogram": HistogramMatch,
}


def colour_strategy(preserve_colors: str) -> ColourStrategy:
    """The strategy for a `StyleParams.preserve_colors` value."""
    return _STRATEGIES[preserve_colors]()
