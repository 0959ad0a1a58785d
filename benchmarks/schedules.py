"""Which coarse-to-fine schedule reaches the lowest loss per second? Prints time and final loss.

    python benchmarks/schedules.py [content style]

Each schedule's output is scored by the same float32 objective at the output size (the
default weights and layers), so lower is better at equal time. A lower loss is not a
better picture: a 128-px start reached a lower loss than a 256-px one (with the objective
before issue 8), and with today's it lays bands across the picture that the 256-px start,
now the default, does not (benchmarks/quality.py judges the images; README, Quality).
"""
import sys
import time
from pathlib import Path

import torch

from nstyle import Config, load_image, stylize
from nstyle.image import fit_size, resize
from nstyle.weights import choose_weights, load_backbone
from nstyle.objective import Objective

root = Path(__file__).resolve().parents[1]
content, style = (sys.argv[1:3] if len(sys.argv) > 2 else
                  (root.parent / "shared/images/content/tubingen.jpg", root.parent / "shared/images/style/starry_night.jpg"))
SCHEDULES = {
    "2 scales 256-512, 60/30 (default)": Config(),
    "3 scales 128-256-512, 100/60/30": Config(min_size=128),
    "1 scale 512, 60": Config(scales=1),
    "2 scales, 60/30, no detail restore": Config(restore_detail=False),
}
cfg = Config()
net = load_backbone(choose_weights(cfg.model), [*cfg.content_layers, *cfg.style_layers]).to(memory_format=torch.channels_last)
c_img, s_img = load_image(content), load_image(style)
hw = fit_size(*c_img.shape[-2:], cfg.size)
c = resize(c_img, hw).unsqueeze(0) * 255
s = resize(s_img, fit_size(*s_img.shape[-2:], cfg.size)).unsqueeze(0) * 255
score = Objective(net, c, [s], [1.0], cfg, torch.float32)
print(f"{'schedule':45} {'seconds':>8} {'float32 loss':>13}")
for name, config in SCHEDULES.items():
    t = time.perf_counter()
    out = stylize(content, [style], config)
    seconds = time.perf_counter() - t
    with torch.no_grad():
        loss, _ = score(out.unsqueeze(0) * 255)
    print(f"{name:45} {seconds:8.1f} {float(loss):13.2f}", flush=True)
