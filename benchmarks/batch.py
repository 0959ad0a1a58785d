"""nstyle batch on a real multi-node Ray cluster on this machine: throughput of two workers
against one, what Ray costs per job, byte identity with a run here, and a node killed mid-batch.

    python benchmarks/batch.py                      # 20 jobs (5 photos x 4 paintings) at 128 px
    python benchmarks/batch.py --size 192 --iterations 40 --photos 6

Starts a Ray cluster of separate processes on 127.0.0.1 (``ray.cluster_utils.Cluster``): a
head with no CPU for jobs and two worker nodes of one CPU each. The photos are crops of
``examples/tubingen.jpg``, the paintings four of ``benchmarks/results``; the network is
vgg16bn-craft (installed with nstyle), one torch thread per job everywhere. Then:

1. **here**: ``run_batch`` in this process (one engine, one thread): the reference.
2. **Ray, 1 worker** (``workers=1``) and 3. **Ray, 2 workers**, each into a fresh folder.
4. **Ray, 2 workers, a node killed** after the first result (``--no-kill`` skips it).

Throughput is jobs per second from the first job handed out to the last result (the workers'
start and network load, a one-off per worker, are printed apart). Ray's cost per job is
printed two ways: the 1-worker run's seconds per job minus the run here's; and, per job, the
time from handing it to a worker to its result written here, less the worker's own time
on it (manifest ``seconds``: fetching its inputs and ``run_job``). Asserts that every output of
every Ray run is byte for byte the run here's, and that every job finished once.
"""
from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: keep 127.0.0.1 as it is
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nstyle import batch  # noqa: E402
from nstyle.config import Config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAINTINGS = ["starry_night.jpg", "the_scream.jpg", "picasso_selfport1907.jpg", "woman-with-hat-matisse.jpg"]


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {os.cpu_count()} cores, avx512_bf16: {'yes' if 'avx512_bf16' in text else 'no'}"


def make_inputs(folder: Path, photos: int) -> list[batch.BatchJob]:
    (folder / "photos").mkdir()
    (folder / "paintings").mkdir()
    with Image.open(ROOT / "examples" / "tubingen.jpg") as img:
        img = img.convert("RGB")
        w, h = img.size
        for k in range(photos):  # crops across the picture
            left = k * (w // 3) // max(photos - 1, 1)
            img.crop((left, 0, left + 2 * w // 3, h)).save(folder / "photos" / f"tubingen{k}.png")
    for name in PAINTINGS:
        with Image.open(ROOT / "benchmarks" / "results" / name) as img:
            img.convert("RGB").save(folder / "paintings" / (Path(name).stem + ".png"))
    return batch.plan_pairs(batch.image_files(["photos"], ""), batch.image_files(["paintings"], ""))


class Clock:
    """The batch's events, timed: when each job was handed out and when its result came."""

    def __init__(self, kill=None):
        self.start, self.done, self.kill = {}, {}, kill

    def __call__(self, p: batch.BatchProgress) -> None:
        now = time.perf_counter()
        if p.event == "running":
            self.start[p.name] = now
        elif p.event == "done":
            self.done[p.name] = now
            if self.kill is not None:
                kill, self.kill = self.kill, None
                threading.Thread(target=kill, daemon=True).start()

    def throughput(self) -> float:
        return len(self.done) / (max(self.done.values()) - min(self.start.values()))


def seconds(out: Path) -> dict[str, float]:
    db = sqlite3.connect(out / "manifest.sqlite")
    found = dict(db.execute("SELECT name, seconds FROM jobs"))
    db.close()
    return found


def attempts(out: Path) -> int:
    db = sqlite3.connect(out / "manifest.sqlite")
    total = db.execute("SELECT sum(attempts) FROM jobs").fetchone()[0]
    db.close()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--photos", type=int, default=5, help="photos (x 4 paintings = jobs; at least 5 for 20)")
    parser.add_argument("--no-kill", action="store_true", help="skip the run with a node killed")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    torch.set_num_threads(1)
    config = Config(size=args.size, iterations=args.iterations, model="vgg16bn-craft")
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, ray {ray.__version__}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="nstyle-batch-bench-"))
    os.chdir(work)
    jobs = make_inputs(work, args.photos)
    n = len(jobs)
    print(f"{n} jobs at {args.size} px, {args.iterations} iterations, vgg16bn-craft, one thread per job; in {work}")

    here = Clock()
    started = time.perf_counter()
    result = batch.run_batch(jobs, "here", config, callback=here)
    assert result.ok and result.done == n, result
    local_rate = here.throughput()
    print(f"here, one process:          {time.perf_counter() - started:6.1f} s, {local_rate * 60:5.2f} jobs/min "
          f"({1 / local_rate:.2f} s a job)")
    started = time.perf_counter()
    again = batch.run_batch(jobs, "here", config)
    assert again.ok and again.skipped == n
    print(f"here, run again (nothing to do): {time.perf_counter() - started:.3f} s for {n} jobs")

    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}})
    try:
        for _ in range(2):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.wait_for_nodes()
        runs = [("ray1", 1, None), ("ray2", 2, None)]
        if not args.no_kill:
            runs.append(("ray2-kill", 2, lambda: cluster.remove_node(next(iter(cluster.worker_nodes)), False)))
        rates = {}
        for name, workers, kill in runs:
            clock = Clock(kill)
            started = time.perf_counter()
            result = batch.run_batch(jobs, name, config, ray=cluster.address, workers=workers, threads=1, callback=clock)
            wall = time.perf_counter() - started
            assert result.ok and result.done == n, result
            for job in jobs:
                assert (work / name / job.name).read_bytes() == (work / "here" / job.name).read_bytes(), (name, job.name)
            rates[name] = clock.throughput()
            startup = min(clock.start.values()) - started
            extra = f", {attempts(work / name) - n} job(s) run again after the node was lost" if kill else ""
            print(f"Ray, {workers} worker(s){' (node killed)' if kill else ''}: {wall:6.1f} s, "
                  f"{rates[name] * 60:5.2f} jobs/min ({startup:.1f} s to connect and start the workers){extra}; "
                  f"outputs byte-identical to here: yes")
            if name == "ray1":
                inside = seconds(work / name)
                waits = [clock.done[j] - clock.start[j] - inside[j] for j in clock.done]
                per_job_ray1 = 1 / rates[name]
        print(f"throughput, 2 workers / 1 worker: {rates['ray2'] / rates['ray1']:.2f}x (asked: at least 1.8x)")
        print(f"Ray's cost per job: {1000 * (per_job_ray1 - 1 / local_rate):+.0f} ms against the run here "
              f"({per_job_ray1:.2f} s against {1 / local_rate:.2f} s a job); handing out, transfer and the write "
              f"here: {1000 * sum(waits) / len(waits):.0f} ms a job (median {1000 * sorted(waits)[len(waits) // 2]:.0f} ms)")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
