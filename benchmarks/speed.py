"""Speed, memory and the Keras comparison: prints tables, asserts nothing.

    python benchmarks/speed.py                       # everything, ~15 min on 2 cores
    python benchmarks/speed.py --only table          # seconds/iteration and memory per size
    python benchmarks/speed.py --only good           # the default run at 512 px, and the defaults before issue 8
    python benchmarks/speed.py --only keras --keras-steps 4000 --keras-precision bfloat16 \
        --keras-trace out/keras4000.json             # the full Keras schedule (~1.1 h; float32: ~2 h),
                                                     # its trace kept for reuse

Sections:
  table   seconds per iteration and peak memory at 256, 512, 1024 px for each backbone and
          precision (vgg19 with random weights when its file is absent: speed does not depend
          on the values), each in a fresh process so peak RSS is its own;
  flops   achieved GFLOP/s of a whole default run against the network's own forward+backward
          rate and this machine's matrix-multiply peak;
  good    time to a finished image with the default settings at 512 px (tubingen x starry night);
  keras   the Keras example's objective and SGD schedule (--preset keras, vgg16bn-craft), then
          nstyle's own optimiser on that same objective: time to reach the same loss.
Figures are ratios taken in one run where possible: these machines are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
CONTENT = IMAGES / "content" / "tubingen.jpg"
STYLE = IMAGES / "style" / "starry_night.jpg"
if not CONTENT.exists():  # a checkout without ../shared: the shipped examples
    CONTENT, STYLE = ROOT / "examples" / "tubingen.jpg", ROOT / "examples" / "starry_night.jpg"
# Keras example at 400 rows: the example's own TensorFlow code on vgg16bn-craft (batch norms
# folded) took 2.3-2.6 s per SGD step here, about 2.7 hours for 4000 steps (issue 3).
KERAS_SECONDS_PER_STEP = 2.45


def conv_flops(net, hw: tuple[int, int]) -> float:
    """Multiply-adds x 2 of the network's convolutions for one forward pass at ``hw``."""
    h, w = hw
    total = 0.0
    for name, layer in zip(net.names, net.layers):
        if isinstance(layer, torch.nn.Conv2d):
            total += 2.0 * layer.in_channels * layer.out_channels * 9 * h * w
        elif isinstance(layer, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            h, w = h // 2, w // 2
    return total


def _net(model: str, layers):
    from nstyle import network, weights
    spec = network.BACKBONES[model]
    path = weights.default_weights_path(spec)
    if path is None:  # random weights of the right shapes
        convs = {n: (torch.randn(co, ci, 3, 3) * 0.05, torch.zeros(co))
                 for n, k, ci, co in spec.layers if k == "conv"}
        return network.Backbone(spec, convs, layers)
    return weights.load_backbone(weights.choose_weights(model), layers)


def _one_size(model: str, size: int, precision: str, iterations: int) -> dict:
    """Run in a child process: seconds per iteration of stylize at one scale."""
    from nstyle import Config
    from nstyle.objective import Objective
    from nstyle.loop import run, State
    from nstyle.plan import resolve_precision
    torch.manual_seed(0)
    cfg = Config(size=size, scales=1, iterations=iterations, precision=precision, model=model)
    net = _net(model, [*cfg.content_layers, *cfg.style_layers]).to(memory_format=torch.channels_last)
    h, w = round(size * 0.75), size
    c = torch.rand(1, 3, h, w) * 255
    dtype = resolve_precision(precision, torch.device("cpu"))
    obj = Objective(net, c, [torch.rand(1, 3, h, w) * 255], [1.0], cfg, dtype)
    state = State(None, time.perf_counter(), lambda image: image, total=iterations + 2, scales=1)
    run(obj, c.clone().requires_grad_(True), cfg, 2, state)  # warm up
    t = time.perf_counter()
    run(obj, c.clone().requires_grad_(True), cfg, iterations, state)
    return {"s_per_it": (time.perf_counter() - t) / iterations, "gflop_fb": 2 * conv_flops(net, (h, w)) / 1e9}


def table(args) -> None:
    print("\n## seconds per L-BFGS iteration and peak memory (content+style+TV, default layers; 4:3 images)")
    print(f"{'model':15} {'precision':9} {'size':>9} {'s/iter':>7} {'GFLOP/it':>9} {'GFLOP/s':>8} {'peak RSS':>9}")
    for model in ("vgg16bn-craft", "vgg19"):
        for precision in ("float32", "bfloat16"):
            for size in (256, 512, 1024):
                iters = {256: 10, 512: 5, 1024: 3}[size]
                code = (f"import json,sys; sys.path.insert(0,{str(ROOT / 'benchmarks')!r}); import speed; "
                        f"print(json.dumps(speed._one_size({model!r},{size},{precision!r},{iters})))")
                proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                out = proc.stdout.read()
                _, status, usage = os.wait4(proc.pid, 0)
                r = json.loads(out.strip().splitlines()[-1])
                print(f"{model:15} {precision:9} {round(size*.75):>4}x{size:<4} {r['s_per_it']:7.3f} "
                      f"{r['gflop_fb']:9.1f} {r['gflop_fb'] / r['s_per_it']:8.0f} {usage.ru_maxrss / 2**20:7.2f} GB",
                      flush=True)


def matmul_peak(dtype: torch.dtype, n: int = 4096, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def network_rate(net, hw, dtype) -> float:
    """GFLOP/s of the bare network's forward+backward (input gradient) at ``hw``."""
    x = (torch.rand(1, 3, *hw) * 255).requires_grad_(True)
    flops = 2 * conv_flops(net, hw)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = net(x.contiguous(memory_format=torch.channels_last))
        sum(v.float().sum() for v in out.values()).backward()
        times.append(time.perf_counter() - t)
    return flops / min(times[1:]) / 1e9


# The defaults before issue 8 (CRAFT network, the photo as the start, the painting's full
# statistics), to put the new defaults' cost beside.
BEFORE_ISSUE_8 = dict(model="vgg16bn-craft", init="content", style_strength=1.0, content_weight=1.0, tv_chroma_weight=0,
                      content_layers=("relu4_2",), min_size=128, style_layer_decay=1.0)


def good(args, label: str = "default settings", **changes) -> dict:
    """A default run at 512 px: wall time, evaluations, and the whole run's GFLOP/s."""
    from nstyle import Config, stylize
    from nstyle.plan import resolve_precision
    record = []
    cfg = Config(size=512, **changes)
    t = time.perf_counter()
    stylize(CONTENT, [STYLE], cfg, callback=record.append)
    wall = time.perf_counter() - t
    from nstyle.weights import choose_weights
    net = _net(choose_weights(cfg.model).spec.name, [*cfg.content_layers, *cfg.style_layers])
    flops = 0.0
    for p in record:
        flops += 2 * conv_flops(net, p.size)
    dtype = resolve_precision("auto", torch.device("cpu"))
    print(f"\n## time to a good image: {label} ({net.spec.name}), 512 px, {CONTENT.name} x {STYLE.name}")
    print(f"wall {wall:.1f} s (model load, targets, {len(record)} iterations, {record[-1].evaluations} evaluations)"
          f"; final size {record[-1].size[1]}x{record[-1].size[0]}")
    net = net.to(memory_format=torch.channels_last)
    rate = network_rate(net, (384, 512), dtype)
    run_rate = flops / wall / 1e9
    peak = matmul_peak(dtype)
    print(f"\n## GFLOP/s ({str(dtype).replace('torch.', '')})")
    print(f"whole run          {run_rate:7.0f} GFLOP/s  ({flops / 1e9:.0f} GFLOP of convolutions in {wall:.1f} s)")
    print(f"network fwd+bwd    {rate:7.0f} GFLOP/s  at 512x384 -> the run achieves {run_rate / rate:.0%} of it")
    print(f"matmul 4096^2 peak {peak:7.0f} GFLOP/s  -> the run achieves {run_rate / peak:.0%} of it")
    # The cost in a unit that does not depend on the machine's speed that day: float32
    # forward+backward passes of the same network at 512x384, timed in this process.
    net32 = net.float()
    one_pass = 2 * conv_flops(net32, (384, 512)) / (network_rate(net32, (384, 512), torch.float32) * 1e9)
    print(f"\n## cost: {wall / one_pass:.1f} float32 forward+backward passes at 512x384 "
          f"({one_pass:.2f} s each; {'bf16' if dtype == torch.bfloat16 else 'no bf16'} on this CPU)")
    return {"wall": wall, "passes": wall / one_pass}


def keras_schedule(steps: int, trace_file: str | None, precision: str = "float32") -> tuple[float, float]:
    """The Keras example's schedule in nstyle: (final loss, seconds). Read from ``trace_file``
    when it holds a run of ``steps`` steps, else run it (and write the file when one is named)."""
    from nstyle import preset, stylize
    if trace_file and Path(trace_file).exists():
        saved = json.loads(Path(trace_file).read_text())
        if saved["steps"] == steps and saved.get("precision", "float32") == precision:
            print(f"(read from {trace_file}: {saved['when']})")
            trace = saved["trace"]
        else:
            trace_file, trace = None, None
    else:
        trace = None
    if trace is None:
        trace = []
        start = time.perf_counter()

        def record(p):
            trace.append((p.step, p.loss, time.perf_counter() - start))
            if p.step % 500 == 0:  # a long run shows where it is
                print(f"  ... step {p.step}: loss {p.loss:.2f}, {trace[-1][2]:.0f} s", flush=True)

        stylize(CONTENT, [STYLE], preset("keras", iterations=steps, model="vgg16bn-craft", precision=precision),
                callback=record)
        if trace_file:
            from nstyle.image import atomic_write_bytes
            atomic_write_bytes(Path(trace_file), json.dumps(
                {"steps": steps, "precision": precision, "when": time.strftime("%Y-%m-%d %H:%M"),
                 "trace": trace}).encode())
    for step, loss, _ in trace:
        if step in (1, 100, 200) or step % 1000 == 0 or step == steps:
            print(f"  step {step:5d}: loss {loss:.2f}")
    # Wall time, and the median step x steps, which a paused or shared machine does not inflate.
    gaps = sorted(b[2] - a[2] for a, b in zip(trace, trace[1:]))
    median = gaps[len(gaps) // 2] if gaps else 0.0
    print(f"Keras schedule in nstyle: {trace[-1][2]:.0f} s wall for {steps} steps "
          f"(median {median:.2f} s/step -> {median * steps:.0f} s); final loss {trace[-1][1]:.2f}")
    return trace[-1][1], median * steps


def keras(args) -> None:
    from nstyle import preset, stylize
    print(f"\n## the Keras example's objective (--preset keras, vgg16bn-craft, 400x533), {args.keras_steps} SGD steps"
          f", network in {args.keras_precision}")
    target, _ = keras_schedule(args.keras_steps, args.keras_trace, args.keras_precision)
    keras_time = KERAS_SECONDS_PER_STEP * args.keras_steps
    print(f"the Keras example's own code: {KERAS_SECONDS_PER_STEP} s/step (measured here, issue 3) "
          f"-> {keras_time:.0f} s for {args.keras_steps} steps")
    for label, overrides in [
        ("L-BFGS, one scale, bf16", dict(optimizer="lbfgs", learning_rate=1.0, precision="auto")),
        ("L-BFGS, 2 scales 200->400 rows, bf16", dict(optimizer="lbfgs", learning_rate=1.0, precision="auto",
                                                       scales=2, min_size=267)),
    ]:
        reached = []
        cfg = preset("keras", model="vgg16bn-craft", iterations=args.lbfgs_steps, clamp=True, **overrides)
        t = time.perf_counter()

        def stop_at_target(p):
            if p.scale == p.scales and p.loss <= target and not reached:
                reached.append((p.step, time.perf_counter() - t))
                raise KeyboardInterrupt

        try:
            stylize(CONTENT, [STYLE], cfg, callback=stop_at_target)
        except KeyboardInterrupt:
            pass
        if reached:
            step, secs = reached[0]
            print(f"nstyle {label}: loss <= {target:.2f} after {step} iterations, {secs:.1f} s; "
                  f"{keras_time / secs:.0f}x sooner than the Keras example's {keras_time:.0f} s")
        else:
            print(f"nstyle {label}: did not reach {target:.2f} in {args.lbfgs_steps} iterations")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["table", "good", "keras"], action="append")
    p.add_argument("--keras-steps", type=int, default=400, help="SGD steps of the Keras schedule (the example: 4000)")
    p.add_argument("--keras-trace", metavar="FILE",
                   help="keep the Keras schedule's loss trace in FILE and reuse it when it is there")
    p.add_argument("--keras-precision", choices=["float32", "bfloat16"], default="float32",
                   help="the Keras schedule's network arithmetic (float32 reproduces the example; bfloat16 "
                        "halves the time)")
    p.add_argument("--lbfgs-steps", type=int, default=300, help="iteration limit for nstyle on that objective")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for name in args.only or ["table", "good", "keras"]:
        {"table": table, "good": good_both, "keras": keras}[name](args)


def good_both(args) -> None:
    """The default run, and the defaults before issue 8 beside it (cost in float32 passes)."""
    after = good(args)
    before = good(args, "the defaults before issue 8", **BEFORE_ISSUE_8)
    print(f"\n## cost of the defaults: {after['passes']:.1f} float32 passes now, {before['passes']:.1f} before issue 8")


if __name__ == "__main__":
    main()
