"""Does bfloat16 change the result? Scores two output images under the same float32 objective.

    python benchmarks/precision.py out_float32.png out_bf16.png [content style]

Prints each image's float32 loss terms and the relative difference of the totals, and the
mean absolute pixel difference (0-255) between the two images. The rule (issue 3): keep
bfloat16 only if the final loss stays within 1 % of float32 and the images look the same.
"""
import sys
from pathlib import Path

import torch

from nstyle import Config, load_image
from nstyle.weights import choose_weights, load_backbone
from nstyle.objective import Objective

root = Path(__file__).resolve().parents[1]
a, b = sys.argv[1:3]
content, style = (sys.argv[3:5] if len(sys.argv) > 4 else
                  (root.parent / "shared/images/content/tubingen.jpg", root.parent / "shared/images/style/starry_night.jpg"))
cfg = Config()
net = load_backbone(choose_weights(cfg.model), [*cfg.content_layers, *cfg.style_layers]).to(memory_format=torch.channels_last)
img_a, img_b = load_image(a), load_image(b)
hw = tuple(img_a.shape[-2:])
from nstyle.image import fit_size, resize  # noqa: E402

c = resize(load_image(content), hw).unsqueeze(0) * 255
s_img = load_image(style)
s = resize(s_img, fit_size(*s_img.shape[-2:], max(hw))).unsqueeze(0) * 255
obj = Objective(net, c, [s], [1.0], cfg, torch.float32)
totals = []
with torch.no_grad():
    for name, img in ((a, img_a), (b, img_b)):
        loss, terms = obj(img.unsqueeze(0) * 255)
        totals.append(float(loss))
        print(f"{name}: float32 loss {float(loss):.3f} " + " ".join(f"{k} {float(v):.3f}" for k, v in terms.items()))
print(f"relative difference of the totals: {abs(totals[1] - totals[0]) / totals[0]:.2%}")
print(f"mean absolute pixel difference: {(img_a - img_b).abs().mean().item() * 255:.2f} / 255")
