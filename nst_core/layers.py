"""The VGG-19 layer layout, written once: block sizes, the convolution names, the layer names a user may pick and
the full sequence of steps (convolutions, ReLUs, pools) the feature extractor runs.

Torch-free, so the parameter model (`nst_core.params`) can list the layer choices in the bot's process; the weight
loader (`nst_core.weights`) and the network (`nst_core.vgg`) read the same names.
"""

from __future__ import annotations

__all__ = ["BLOCKS", "CONV_NAMES", "LAYER_NAMES", "SEQUENCE", "layer_stride"]

#: (block, number of convolutions) of VGG-19's five blocks; each block ends with a 2x2 pool.
BLOCKS: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))

#: The 16 convolutions in network order, our names (conv1_1 ... conv5_4).
CONV_NAMES: tuple[str, ...] = tuple(f"conv{block}_{k}" for block, convs in BLOCKS for k in range(1, convs + 1))

#: Layer names a loss may read, in network order. `convB_K` is the convolution output, `reluB_K` after its ReLU.
#: Gatys et al. write "conv4_2" for what is our relu4_2: Caffe's ReLU runs in place, so its conv blobs are post-ReLU.
LAYER_NAMES: tuple[str, ...] = tuple(name for conv in CONV_NAMES for name in (conv, "relu" + conv[4:]))

#: Every step of the network in order: each block's convolutions and ReLUs, then its pool (`poolB`).
SEQUENCE: tuple[str, ...] = tuple(
    step
    for block, convs in BLOCKS
    for k in range(1, convs + 1)
    for step in (f"conv{block}_{k}", f"relu{block}_{k}", *((f"pool{block}",) if k == convs else ()))
)


def layer_stride(layer: str) -> int:
    """Pixels per feature position at a layer: each block before the layer's own ends with a 2x2 pool
    (`relu3_1` comes after two: 4)."""
    return 2 ** (int(layer[len("conv"):].split("_")[0]) - 1)  # convB_K and reluB_K alike
