"""How much each style layer would weigh under the classic implementations' unnormalised Grams.

    python benchmarks/layer_scales.py                    # vgg16-hed and vgg16bn-craft, 3 paintings
    python benchmarks/layer_scales.py --model vgg19      # where its weights are on the machine

For each painting at 512x384 (area-resized, aspect not kept: a scale figure, not a picture),
per style layer l: the mean of the squared entries of G_l = F_l F_l^T / (C_l H_l W_l), the Gram
as jcjohnson/neural-style normalises it (its StyleLoss is the mean squared error of two such
Grams, so a layer's loss scales with this mean). Printed relative to the largest layer. Where
these differ by orders of magnitude, equal per-layer weights in that form mean the largest
layers decide the style term; nstyle's relative form divides each layer by its target's own
norm instead, so every layer counts alike at decay 1 (see README, "How nstyle differs").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from nstyle import load_image, losses
from nstyle.weights import choose_weights, load_backbone

LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLES = Path(__file__).resolve().parents[2] / "shared" / "images" / "style"


def mean_square_gram(features: torch.Tensor) -> float:
    """Mean of the squared entries of the (C, C) Gram of (1, C, H, W) features, over C*H*W.

    >>> mean_square_gram(torch.ones(1, 2, 1, 2))  # every entry 2 / (2 * 1 * 2) = 0.5
    0.25
    """
    return float((losses.gram(features) / features.shape[1]).pow(2).mean())  # gram: over H*W


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", default=["vgg16-hed", "vgg16bn-craft"])
    p.add_argument("--paintings", nargs="+", default=["the_scream", "starry_night", "shipwreck"])
    args = p.parse_args()
    print("| model | painting | " + " | ".join(LAYERS) + " |")
    print("|---|---|" + "---|" * len(LAYERS))
    for model in args.model:
        net = load_backbone(choose_weights(model), LAYERS)
        for name in args.paintings:
            image = load_image(STYLES / f"{name}.jpg").unsqueeze(0) * 255
            image = F.interpolate(image, size=(384, 512), mode="area")
            with torch.no_grad():
                feats = net(image)
            scales = [mean_square_gram(feats[n]) for n in LAYERS]
            top = max(scales)
            print(f"| {model} | {name} | " + " | ".join(f"{v / top:.2g}" for v in scales) + " |")


if __name__ == "__main__":
    main()
