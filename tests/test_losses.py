"""The objective as term objects: each term's value is reported, the total is their weighted sum, every term's
gradient reaches the pixels, and content and style differ only in how they represent features."""

from __future__ import annotations

import pytest
import torch

from nst_core.device import resolve_placement
from nst_core.losses import ContentLoss, LevelImages, LossTerm, StyleLoss, WeightedSum, gram, objective
from nst_core.optimize import image_to_tensor
from nst_core.params import StyleParams
from nst_core.vgg import PlacedEncoder


@pytest.fixture(scope="module")
def level(content_image, style_image) -> LevelImages:
    params = StyleParams(device="cpu", precision="fp32")
    encode = PlacedEncoder(params, resolve_placement("cpu", "fp32"))
    content = image_to_tensor(content_image.resize((64, 42)))
    style = image_to_tensor(style_image.resize((64, 50)))
    return LevelImages(content=content, styles=(style,), encode=encode)


def test_objective_reports_each_weighted_term_and_their_sum(level):
    params = StyleParams(content_weight=2.0, style_weight=5.0, tv_weight=3.0)
    criterion = objective(params, 1)
    criterion.retarget(level)
    x = level.content.clone()
    total, terms = criterion(level.encode(x), x)
    assert set(terms) == {"content", "style", "tv"}
    assert float(terms["content"]) == pytest.approx(0.0, abs=1e-6)  # the photo itself keeps its content exactly
    assert float(terms["style"]) > 0 and float(terms["tv"]) > 0
    assert float(total) == pytest.approx(sum(float(v) for v in terms.values()))
    unweighted = ContentLoss(params.content_layers)
    unweighted.retarget(level)
    noise = torch.rand_like(x)
    _, noisy = criterion(level.encode(noise), noise)
    assert float(noisy["content"]) == pytest.approx(2.0 * float(unweighted(level.encode(noise), noise)), rel=1e-5)


def test_every_term_has_a_gradient_on_the_pixels(level):
    criterion = objective(StyleParams(), 1)
    criterion.retarget(level)
    for term, _ in criterion.terms:
        x = torch.rand_like(level.content).requires_grad_(True)
        term(level.encode(x), x).backward()
        assert x.grad is not None and float(x.grad.abs().sum()) > 0, term.name


def test_style_is_the_content_comparison_on_gram_matrices(level):
    layers = ("relu1_1", "relu3_1")
    style = StyleLoss(layers)
    style.retarget(level)
    feats = level.encode(level.styles[0])
    for layer in layers:
        assert torch.allclose(style.targets[layer], gram(feats[layer]))
    # the style image scores 0 against its own Grams; the photo does not
    assert float(style(feats, level.styles[0])) == pytest.approx(0.0, abs=1e-6)
    assert float(style(level.encode(level.content), level.content)) > 0.01


def test_a_new_term_is_one_class_and_one_entry(level):
    class Brightness(LossTerm):
        name = "brightness"

        def __call__(self, features, image):
            return (image.mean() - 0.9).pow(2)

    criterion = WeightedSum([*objective(StyleParams(), 1).terms, (Brightness(), 10.0)])
    criterion.retarget(level)
    x = level.content.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.05)
    for _ in range(15):
        optimizer.zero_grad()
        total, terms = criterion(level.encode(x), x)
        total.backward()
        optimizer.step()
    assert "brightness" in terms
    assert float(x.detach().mean()) > float(level.content.mean()) + 0.05  # the new term moved the picture


def test_two_terms_of_one_name_are_refused():
    with pytest.raises(ValueError, match="at most once"):
        WeightedSum([(ContentLoss(("relu4_2",)), 1.0), (ContentLoss(("relu3_2",)), 1.0)])
