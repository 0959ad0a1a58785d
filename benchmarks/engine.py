"""Engine: how much sooner a second Stylizer.stylize call starts than the first.

    python benchmarks/engine.py                 # 64 px, vgg16bn-craft (the network every install has)
    python benchmarks/engine.py --model vgg16-hed --size 128

In one fresh process: a ``Stylizer`` runs one stylization, then another with other images.
For each call it prints the seconds from the call to its first iteration's callback (reading
and checking the weights file, building the network, the targets, one optimiser step) and
from the call to its end. The first call reads the weights (its MD5 and its arrays) and
builds the network; the second finds both kept by the engine. A third call goes through a
new ``Stylizer`` in the same process: the parsed arrays are cached per process (weights.py)
but the network is built again, which is what ``nstyle.stylize`` (the one-shot wrapper) costs.
Asserts nothing; the figures vary with the disk cache (run it twice: the first run of a
machine also reads the file from disk).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from nstyle import Config, Stylizer


def tiny(seed: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def timed(engine: Stylizer, seed: int, size: int) -> tuple[float, float]:
    first = []
    start = time.perf_counter()

    def cb(progress):
        if not first:
            first.append(time.perf_counter() - start)

    engine.stylize(tiny(seed, size * 3 // 4, size), [tiny(seed + 1, size, size)], callback=cb)
    return first[0], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--model", default="vgg16bn-craft")
    args = p.parse_args()
    config = Config(size=args.size, scales=1, iterations=args.iterations, model=args.model)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.model}, {args.size} px, {args.iterations} iterations\n")
    engine = Stylizer(config)
    rows = [("first call, new Stylizer", *timed(engine, 0, args.size)),
            ("second call, same Stylizer", *timed(engine, 2, args.size)),
            ("new Stylizer, same process", *timed(Stylizer(config), 4, args.size))]
    base = rows[1][1]
    print("| call | s to first iteration | x second call's | s in all |\n|---|---|---|---|")
    for name, first, total in rows:
        print(f"| {name} | {first:.3f} | {first / base:.1f}x | {total:.3f} |")


if __name__ == "__main__":
    main()
