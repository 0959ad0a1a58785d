"""nstyle batch on a real multi-node Ray cluster on this machine: a head and two worker nodes,
each its own set of processes (``ray.cluster_utils.Cluster``), all on the loopback address.

One worker node is killed in the middle of a batch: every job still finishes once, and the
outputs are byte for byte those of the same batch run here, one thread per job in both. The
workers read no file of this process: the jobs name their inputs relative to this process's
working directory, which the workers do not share; the inputs reach them through the object
store. The workers use conftest's random-weight network (``servers.random_network_worker``,
run first in each actor; the nodes get ``tests/`` on their PYTHONPATH).
"""
from __future__ import annotations

import ipaddress
import os
import threading
from pathlib import Path

import psutil
import pytest

from conftest import tiny, write_image
from test_batch import rows
from nstyle import batch
from nstyle.config import Config

# Read when Ray is imported: without it, Ray replaces 127.0.0.1 with the machine's network
# address, where the driver cannot reach the nodes.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'nstyle[ray]'")

TESTS = Path(__file__).resolve().parent
CONFIG = Config(size=32, iterations=200)
ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPU for jobs) and two worker nodes of one CPU each, on 127.0.0.1."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before this module set its environment"
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    # A node that stops answering is declared dead after about 3 s, not Ray's default 30 s.
    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
              "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 0,
                                                      "include_dashboard": False, "_system_config": health})
    try:
        for _ in range(2):
            c.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "paintings").mkdir()
    for k in range(4):
        write_image(tiny(k, 32, 40), tmp_path / "photos" / f"p{k}.png")
    for k in range(2):
        write_image(tiny(10 + k, 36, 32), tmp_path / "paintings" / f"s{k}.png")
    return batch.plan_pairs(batch.image_files(["photos"], ""), batch.image_files(["paintings"], ""))


def listening_addresses() -> set[str]:
    """The addresses this process's descendants (the cluster's processes) listen on."""
    pids = {p.pid for p in psutil.Process().children(recursive=True)}
    return {c.laddr.ip for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def test_a_worker_node_killed_mid_batch_loses_no_job(cluster, inputs, tmp_path, random_network, monkeypatch):
    import servers

    monkeypatch.setattr(batch, "choose_weights", lambda *args, **kwargs: random_network)
    here = batch.run_batch(inputs, "here", CONFIG)  # one thread (conftest), as each Ray worker has
    assert here.ok and here.done == 8

    victim = next(n for n in cluster.worker_nodes)
    killed = threading.Event()
    workers = set()

    def kill_one_node(p) -> None:
        if p.event == "running":
            workers.add(p.worker)
        if p.event == "done" and not killed.is_set():  # both workers are busy with the next jobs
            killed.set()
            threading.Thread(target=cluster.remove_node, args=(victim, False), daemon=True).start()

    try:
        result = batch.run_batch(inputs, "there", CONFIG, ray=cluster.address, setup=servers.random_network_worker,
                                 callback=kill_one_node)
        for address in listening_addresses():
            assert ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback, address
    finally:
        if len(cluster.worker_nodes) < 2:  # the next test gets two nodes again
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
            cluster.wait_for_nodes()
    assert killed.is_set()
    assert result.ok and result.done == 8, result
    manifest = rows(tmp_path / "there")
    assert all(r["status"] == "done" and r["error"] is None for r in manifest.values()), manifest
    assert sum(r["attempts"] for r in manifest.values()) > 8, "no job was running on the node killed"
    assert len(workers) >= 2, workers  # jobs were handed to workers on both nodes
    for job in inputs:
        assert (tmp_path / "there" / job.name).read_bytes() == (tmp_path / "here" / job.name).read_bytes(), job.name
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == sorted([".nstyle-batch", "manifest.sqlite",
                                                                           *(j.name for j in inputs)])

    # Run again on the cluster: nothing to do, no worker started.
    again = batch.run_batch(inputs, "there", CONFIG, ray=cluster.address, setup=servers.random_network_worker)
    assert again.ok and (again.done, again.skipped) == (0, 8)


def test_a_bad_image_fails_its_jobs_on_the_cluster_too(cluster, inputs, tmp_path, random_network, monkeypatch):
    import servers

    monkeypatch.setattr(batch, "choose_weights", lambda *args, **kwargs: random_network)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    jobs = batch.plan_pairs(["photos/broken.png", "photos/p0.png"], ["paintings/s0.png"])
    result = batch.run_batch(jobs, "out", CONFIG, ray=cluster.address, setup=servers.random_network_worker)
    assert result.done == 1 and [name for name, _ in result.failed] == ["broken__s0.png"]
    error = rows(tmp_path / "out")["broken__s0.png"]["error"]
    assert "broken.png" in error and "\n" not in error, error
