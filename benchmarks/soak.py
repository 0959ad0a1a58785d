"""Soak: many small stylizations in one process; does resident memory creep?

    python benchmarks/soak.py            # 200 runs at 32 px: 100 through Stylizer, 100 through run_job
    python benchmarks/soak.py --runs 1000

One process, one ``Stylizer`` (as the web app and batch keep one): the first half of the runs
call ``Stylizer.stylize`` with fresh random images, the second half ``jobs.run_job`` with
files (output, log and a snapshot written each time, into a temporary folder). Resident
memory (psutil RSS) is read after every run; the script prints the mean over the first 20
runs and over the last 20 and their ratio (the aim: within 5 %), with the peak. Asserts
nothing.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import torch

from nstyle import Config, Stylizer, save_image
from nstyle.jobs import Job, run_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    config = Config(size=args.size, iterations=3, scales=1, model="vgg16bn-craft")
    engine = Stylizer(config)
    proc = psutil.Process()
    rss: list[float] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k in range(args.runs):
            g = torch.Generator().manual_seed(k)
            content = torch.rand(3, args.size * 3 // 4, args.size, generator=g)
            style = torch.rand(3, args.size, args.size, generator=g)
            if k < args.runs // 2:
                engine.stylize(content, [style])
            else:
                c, s = folder / f"c{k}.png", folder / f"s{k}.png"
                save_image(content, c)
                save_image(style, s)
                result = run_job(Job(c, [s], folder / f"o{k}.png", config, save_every=1, log=folder / f"o{k}.json"),
                                 engine)
                assert result.status == "done"
                for path in folder.iterdir():
                    path.unlink()
            gc.collect()
            rss.append(proc.memory_info().rss / 2**20)
    first, last = statistics.mean(rss[:20]), statistics.mean(rss[-20:])
    print(f"{args.runs} runs at {args.size} px in {time.perf_counter() - start:.0f} s; resident memory (MB): "
          f"first 20 {first:.1f}, last 20 {last:.1f}, ratio {last / first:.3f}, peak {max(rss):.1f}")


if __name__ == "__main__":
    main()
