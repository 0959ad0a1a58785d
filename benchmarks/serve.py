"""nstyle serve: time from Start to the first preview, and the server's overhead on a whole run.

    python benchmarks/serve.py                     # 512 px, tubingen x starry night, the default network
    python benchmarks/serve.py --size 256 --repeats 1

Starts ``nstyle serve`` (a subprocess, on a free port, a temporary data folder), uploads the
two example images and warms it up with a one-iteration run (the worker reads the weights and
builds the network). Then, ``--repeats`` times, alternating:

- **server**: POST /api/runs to the run's 'done' event, as a page sees it, with an event
  stream open (previews announced; each one fetched, as the page does); and from the POST to
  the first preview fetched.
- **run_job**: the same job in this process with a warm ``Stylizer``: what the command line
  runs, without its process start and network load.

and once the ``nstyle`` command itself (wall clock, its start and network load included), from
the data folder with the same relative paths as the server's job, whose PNG must then be the
server's byte for byte. The overhead is server / run_job - 1 (the best of each). Asserts only
the byte identity; the machine's other work moves the figures (run it on a quiet machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
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
    p.add_argument("--photo", default=str(ROOT / "examples" / "tubingen.jpg"))
    p.add_argument("--painting", default=str(ROOT / "examples" / "starry_night.jpg"))
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nstyle-serve-bench-"))
    proc, url = start_server(folder)
    try:
        client = httpx.Client(base_url=url, timeout=60)
        ids = [client.post("/api/uploads", content=Path(f).read_bytes(), headers={"X-File-Name": Path(f).name}).json()
               for f in (args.photo, args.painting)]
        stream = Stream(url)
        body = {"content": ids[0]["id"], "styles": [ids[1]["id"]], "settings": {"size": args.size}}

        def server_run(settings: dict) -> tuple[float, float, dict]:
            t0 = time.perf_counter()
            run = client.post("/api/runs", json={**body, "settings": settings}).json()
            first = stream.wait(lambda kind, d: kind == "preview" and d["run"] == run["id"])
            end = stream.wait(lambda kind, d: kind == "run" and d["id"] == run["id"] and d["status"] not in ("queued", "running"))
            record = client.get(f"/api/runs/{run['id']}").json()
            assert record["status"] == "done", record
            return first - t0, end - t0, record

        server_run({"size": args.size, "iterations": 1})  # the worker reads the weights, builds the network
        os.chdir(folder)  # the server's jobs name their files relative to it
        ext = {u["id"]: next(f.name for f in folder.joinpath("uploads").glob(f"{u['id']}.*")
                             if not f.name.endswith(".view.jpg")) for u in ids}
        job_args = (f"uploads/{ext[ids[0]['id']]}", (f"uploads/{ext[ids[1]['id']]}",))
        engine = Stylizer()
        run_job(Job(*job_args, str(folder / "warm.png"), Config(size=args.size, iterations=1)), engine)

        firsts, servers, directs, engine_seconds = [], [], [], []
        for k in range(args.repeats):
            first, total, record = server_run(body["settings"])
            firsts.append(first)
            servers.append(total)
            engine_seconds.append(record["result"]["seconds"])
            t0 = time.perf_counter()
            result = run_job(Job(*job_args, str(folder / f"direct{k}.png"), Config(size=args.size)), engine)
            directs.append(time.perf_counter() - t0)
            print(f"repeat {k + 1}: server {total:.2f} s (first preview {first:.2f} s; run_job inside the worker "
                  f"{record['result']['seconds']:.2f} s), run_job here {directs[-1]:.2f} s ({result.seconds:.2f} s)",
                  flush=True)
        served = folder / "runs" / record["id"] / "output.png"

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nstyle", *job_args[:1], *job_args[1], "-o", str(folder / "cli.png"),
                        "-s", str(args.size), "-q"], check=True)
        command = time.perf_counter() - t0
        same = (folder / "cli.png").read_bytes() == served.read_bytes()
    finally:
        proc.terminate()
        proc.wait(30)

    overhead = min(servers) / min(directs) - 1
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    print(f"\n{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{Path(args.photo).name} x {Path(args.painting).name}, {args.size} px, model {record['result']['model']}, "
          f"best of {args.repeats}\n")
    print("| measure | seconds |\n|---|---|")
    print(f"| Start to first preview (network loaded) | {min(firsts):.2f} |")
    print(f"| whole run through the server (POST to 'done' event) | {min(servers):.2f} |")
    print(f"| the same job through run_job in one process, warm engine | {min(directs):.2f} |")
    print(f"| the `nstyle` command, wall clock (process start and network load included) | {command:.2f} |")
    print(f"\nserver overhead on the whole run: {100 * overhead:+.1f} % (target at most 3 %)")
    print(f"the command line's PNG is the server's, byte for byte: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
