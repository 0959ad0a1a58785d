"""nstyle serve: time from Start to the first preview, and the server's overhead on a whole run.

    python benchmarks/serve.py                     # 512 px, tubingen x starry night, the default network
    python benchmarks/serve.py --size 256 --repeats 1
    python benchmarks/serve.py --threads 1         # every process on one thread (a machine shared with other work)

Starts ``nstyle serve`` (a subprocess, on a free port, a temporary data folder), uploads the
two example images and warms it up with a one-iteration run (the worker reads the weights and
builds the network). Then, ``--repeats`` times, alternating:

- **server**: POST /api/runs to the run's 'done' event, as a page sees it, with an event
  stream open (previews announced; each one fetched, as the page does); and from the POST to
  the first preview fetched.
- **run_job**: the same job in this process with a warm ``Stylizer``: what the command line
  runs, without its process start and network load.

in the order ABBA (server, run_job, run_job, server, ...) against a drifting load; and once the
``nstyle`` command itself (wall clock, its start and network load included), in a folder
holding the two images under the names they were uploaded with (the server's PNG names its
inputs so), whose PNG must then be the server's byte for byte. The overhead is server /
run_job - 1, the best of each, in wall-clock seconds and in CPU seconds (the server's and
its worker's processes against this one's): on a machine shared with other work the wall
clock moves with the others' load, CPU time much less.
Asserts only the byte identity.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import torch

from nstyle import Config, Stylizer
from nstyle.jobs import Job, run_job

ROOT = Path(__file__).resolve().parents[1]


class Stream:
    """The server's events, read in a thread; fetches each announced preview as the page does
    (the next once the last has arrived: here, at once)."""

    def __init__(self, url: str):
        self.url, self.events, self.lock = url, [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with httpx.Client(base_url=self.url, timeout=None) as client, client.stream("GET", "/api/events") as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if kind == "preview":
                        client.get(f"/api/runs/{data['run']}/preview.jpg?step={data['step']}").raise_for_status()
                    with self.lock:
                        self.events.append((time.perf_counter(), kind, data))
                        self.lock.notify_all()

    def wait(self, test, timeout: float = 3600) -> float:
        """The time of the first event that passes ``test(kind, data)``."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for t, kind, data in self.events:
                    if test(kind, data):
                        return t
                if not self.lock.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise TimeoutError("no such event")


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, NSTYLE_DATA=str(folder))
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(r"open (http://\S+)", line)
        if found:
            return proc, found.group(1).rstrip("/")
    raise RuntimeError("the server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch threads of every process (OMP_NUM_THREADS; default: torch's)")
    p.add_argument("--photo", default=str(ROOT / "examples" / "tubingen.jpg"))
    p.add_argument("--painting", default=str(ROOT / "examples" / "starry_night.jpg"))
    args = p.parse_args()
    if args.threads:  # for the server, its worker and the command, which read it as they start
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="nstyle-serve-bench-"))
    proc, url = start_server(folder)
    try:
        client = httpx.Client(base_url=url, timeout=60)
        ids = [client.post("/api/uploads", content=Path(f).read_bytes(), headers={"X-File-Name": Path(f).name}).json()
               for f in (args.photo, args.painting)]
        stream = Stream(url)
        body = {"content": ids[0]["id"], "styles": [ids[1]["id"]], "settings": {"size": args.size}}

        def cpu_seconds() -> tuple[float, float]:
            """CPU seconds so far of the server's own process, and of its children (the worker)."""
            server = psutil.Process(proc.pid)
            return sum(server.cpu_times()[:2]), sum(sum(c.cpu_times()[:2]) for c in server.children(recursive=True))

        def server_run(settings: dict) -> dict:
            (web0, worker0), t0 = cpu_seconds(), time.perf_counter()
            run = client.post("/api/runs", json={**body, "settings": settings}).json()
            first = stream.wait(lambda kind, d: kind == "preview" and d["run"] == run["id"])
            end = stream.wait(lambda kind, d: kind == "run" and d["id"] == run["id"] and d["status"] not in ("queued", "running"))
            web1, worker1 = cpu_seconds()
            record = client.get(f"/api/runs/{run['id']}").json()
            assert record["status"] == "done", record
            return {"first": first - t0, "wall": end - t0, "web_cpu": web1 - web0, "worker_cpu": worker1 - worker0,
                    "job": record["result"]["seconds"], "page": record["result"]["page_seconds"], "record": record}

        server_run({"size": args.size, "iterations": 1})  # the worker reads the weights, builds the network
        os.chdir(folder)  # the server's jobs name their files relative to it
        ext = {u["id"]: next(f.name for f in folder.joinpath("uploads").glob(f"{u['id']}.*")
                             if not f.name.endswith(".view.jpg")) for u in ids}
        job_args = (f"uploads/{ext[ids[0]['id']]}", (f"uploads/{ext[ids[1]['id']]}",))
        engine = Stylizer()
        run_job(Job(*job_args, str(folder / "warm.png"), Config(size=args.size, iterations=1)), engine)

        servers, directs, loads = [], [], [os.getloadavg()[0]]

        def served() -> None:
            r = server_run(body["settings"])
            servers.append(r)
            print(f"server: {r['wall']:.2f} s (first preview after {r['first']:.2f} s; run_job in the worker "
                  f"{r['job']:.2f} s, of which progress and previews {r['page']:.2f} s; the web server's process "
                  f"{r['web_cpu']:.2f} CPU s); load {os.getloadavg()[0]:.1f}", flush=True)

        def direct() -> None:
            cpu, t0 = time.process_time(), time.perf_counter()
            result = run_job(Job(*job_args, str(folder / f"direct{len(directs)}.png"), Config(size=args.size)), engine)
            directs.append({"wall": time.perf_counter() - t0, "job": result.seconds, "cpu": time.process_time() - cpu})
            print(f"run_job here: {directs[-1]['wall']:.2f} s ({directs[-1]['cpu']:.2f} CPU s); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

        for k in range(args.repeats):
            for step in ((served, direct) if k % 2 == 0 else (direct, served)):
                step()
        loads.append(os.getloadavg()[0])
        record = servers[-1]["record"]
        served_png = folder / "runs" / record["id"] / "output.png"

        # The server's PNG names the inputs as uploaded: the command line gives the same bytes
        # in a folder that holds them under those names.
        named = folder / "named"
        named.mkdir()
        for upload, original in zip([job_args[0], *job_args[1]], (args.photo, args.painting)):
            shutil.copyfile(folder / upload, named / Path(original).name)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nstyle", Path(args.photo).name, Path(args.painting).name,
                        "-o", str(folder / "cli.png"), "-s", str(args.size), "-q"], check=True, cwd=named)
        command = time.perf_counter() - t0
        same = (folder / "cli.png").read_bytes() == served_png.read_bytes()
    finally:
        proc.terminate()
        proc.wait(30)

    best_server, best_direct = min(r["wall"] for r in servers), min(r["wall"] for r in directs)
    # What the server adds, each part measured on its own (on a shared machine these move far
    # less than the wall clock): from the POST to the run's start and from its end to the page's
    # event (beyond run_job's own setup, which the direct run has too), the worker's time on
    # progress and previews inside the run, and the web server's own CPU time.
    setup = statistics.median(r["wall"] - r["job"] for r in directs)
    added = statistics.median(r["wall"] - r["job"] - setup + r["page"] + r["web_cpu"] for r in servers)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    print(f"\n{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{Path(args.photo).name} x {Path(args.painting).name}, {args.size} px, model {record['result']['model']}, "
          f"best of {args.repeats}; load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end\n")
    print("| measure | seconds |\n|---|---|")
    print(f"| Start to first preview (network loaded) | {min(r['first'] for r in servers):.2f} |")
    print(f"| whole run through the server (POST to the page's 'done' event) | {best_server:.2f} |")
    print(f"| the same job through run_job in one process, warm engine | {best_direct:.2f} |")
    print(f"| the `nstyle` command (process start and network load included) | {command:.2f} |")
    print(f"| what the server adds, measured part by part (median) | {added:.2f} |")
    print(f"\nserver overhead on the whole run: {100 * added / best_direct:.1f} % part by part; "
          f"{100 * (best_server / best_direct - 1):+.1f} % best wall clock against best wall clock (target at most 3 %)")
    print(f"the command line's PNG is the server's, byte for byte: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
