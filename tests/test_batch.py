"""nstyle batch on one machine: pairings and names, the finished check, the manifest, a rerun
that does nothing, kill -9 and a rerun, changed options and inputs, bad inputs, Ctrl-C.

Runs are real (``run_batch`` and ``cli.main`` in this process, ``python -m nstyle batch`` in a
process of its own for kill -9) on 32 px images and conftest's seeded random-weight network.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from conftest import tiny, write_image
from nstyle import batch, cli, engine
from nstyle.batch import BatchJob, name_jobs, read_pairs, run_batch, settings_of
from nstyle.config import Config

TESTS = Path(__file__).resolve().parent
OPTIONS = ["-s", "32", "-n", "5", "-q"]
CONFIG = Config(size=32, iterations=5)


@pytest.fixture
def net(random_network, monkeypatch):
    """The random network for the batch's own choice of weights too."""
    monkeypatch.setattr(batch, "choose_weights", lambda *args, **kwargs: random_network)
    return random_network


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """photos/p0.png, photos/p1.png, paintings/s0.png, paintings/s1.png; the working directory."""
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "paintings").mkdir(exist_ok=True)
        write_image(tiny(k, 32, 40), tmp_path / "photos" / f"p{k}.png")
        write_image(tiny(10 + k, 36, 32), tmp_path / "paintings" / f"s{k}.png")
    return tmp_path


NAMES = {"p0__s0.png", "p0__s1.png", "p1__s0.png", "p1__s1.png"}


def main(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(args)
    return code, err.getvalue()


def rows(out: Path) -> dict[str, dict]:
    db = sqlite3.connect(out / "manifest.sqlite")
    cursor = db.execute("SELECT * FROM jobs")
    keys = [d[0] for d in cursor.description]
    found = {row[0]: dict(zip(keys, row)) for row in cursor}
    db.close()
    return found


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.png")}


def leftovers(out: Path) -> list[str]:
    """Anything in the output folder besides results, the manifest and the lock."""
    allowed = {"manifest.sqlite", ".nstyle-batch", ".nstyle-batch/lock"}
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if str(p.relative_to(out)) not in allowed and not re.fullmatch(r"p\d__s\d\.png", p.name))


def batch_command(*extra: str) -> list[str]:
    return ["batch", "--contents", "photos", "--styles", "paintings", "-o", "out", *OPTIONS, *extra]


def test_2x2_batch_writes_what_nstyle_writes_and_a_rerun_does_nothing(folders, net, monkeypatch):
    code, err = main(batch_command())
    assert code == 0, err
    out = folders / "out"
    first = outputs(out)
    assert set(first) == NAMES and leftovers(out) == []
    manifest = rows(out)
    assert set(manifest) == NAMES
    for name, row in manifest.items():
        assert row["status"] == "done" and row["error"] is None and row["seconds"] > 0 and row["worker"], row
        assert row["attempts"] == 1
        assert json.loads(row["settings"])["options"]["size"] == 32
    # Byte for byte the PNG of nstyle itself with the same files and options.
    code, err = main(["photos/p1.png", "paintings/s0.png", "-o", "single.png", *OPTIONS])
    assert code == 0, err
    assert (folders / "single.png").read_bytes() == first["p1__s0.png"]
    meta = settings_of(out / "p1__s0.png")
    assert meta["content"] == os.path.join("photos", "p1.png") and len(meta["sha256"]["content"]) == 64

    # The rerun loads no network, runs no job, changes no file, and is quick.
    def no_network(*args, **kwargs):
        raise AssertionError("a rerun with nothing to do loaded a network")

    monkeypatch.setattr(engine, "load_backbone", no_network)
    start = time.perf_counter()
    code, err = main(batch_command())
    took = time.perf_counter() - start
    assert code == 0, err
    assert took < 2, f"the rerun took {took:.2f} s"
    assert outputs(out) == first
    assert all(row["status"] == "done" and row["attempts"] == 1 for row in rows(out).values())


def test_a_painting_statistics_are_computed_once_per_size(folders, net):
    """Two photos of one shape in two paintings: each painting's statistics once (one scale at 32 px)."""
    jobs = batch.plan_pairs(["photos/p0.png", "photos/p1.png"], ["paintings/s0.png", "paintings/s1.png"])
    result = run_batch(jobs, "out", CONFIG)
    assert result.ok and result.done == 4
    assert result.cache == {"hits": 2, "misses": 2}, result.cache


def test_kill_9_then_rerun_completes_exactly_the_missing_jobs(folders, net):
    """A batch in a process of its own, killed with SIGKILL once its first result is there."""
    for k in range(2, 4):
        write_image(tiny(k, 32, 40), folders / "photos" / f"p{k}.png")
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import servers; servers.random_network_worker(); "
              "import nstyle.batch as b, nstyle.jobs as j; b.choose_weights = j.choose_weights; "
              "from nstyle.cli import main; sys.exit(main())")
    command = [sys.executable, "-c", script, *batch_command("-n", "400")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=folders, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = folders / "out"
    try:
        deadline = time.monotonic() + 120
        # Killed once the first result is there and the next job is under way.
        while proc.poll() is None and time.monotonic() < deadline and not (
                list(out.glob("*.png")) and "running" in {r["status"] for r in rows(out).values()}):
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1].decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = outputs(out)
    assert 1 <= len(before) < 8, sorted(before)
    states = {row["status"] for row in rows(out).values()}
    assert "running" in states, states  # killed in the middle of a job
    for name in before:  # whatever is there is whole
        assert settings_of(out / name) is not None, name

    # The rerun, here, with the same options: exactly the missing jobs run.
    jobs = batch.plan_pairs(batch.image_files(["photos"], ""), batch.image_files(["paintings"], ""))
    result = batch.run_batch(jobs, "out", Config(size=32, iterations=400))
    assert result.ok and result.skipped == len(before) and result.done == 8 - len(before), result
    after = outputs(out)
    assert len(after) == 8 and all(after[name] == data for name, data in before.items())
    assert all(row["status"] == "done" for row in rows(out).values())
    assert leftovers(out) == []


def test_a_changed_option_or_input_reruns_only_what_it_changes(folders, net):
    jobs = batch.plan_pairs(["photos/p0.png", "photos/p1.png"], ["paintings/s0.png", "paintings/s1.png"])
    assert run_batch(jobs, "out", CONFIG).done == 4
    first = outputs(folders / "out")
    # Another painting under the same name: its two jobs again, the others kept.
    write_image(tiny(99, 36, 32), folders / "paintings" / "s1.png")
    result = run_batch(jobs, "out", CONFIG)
    assert (result.done, result.skipped) == (2, 2)
    second = outputs(folders / "out")
    assert {n for n in NAMES if second[n] != first[n]} == {"p0__s1.png", "p1__s1.png"}
    # Another option: all four.
    result = run_batch(jobs, "out", CONFIG.replace(style_strength=0.5))
    assert (result.done, result.skipped) == (4, 0)
    assert all(json.loads(r["settings"])["options"]["style_strength"] == 0.5 for r in rows(folders / "out").values())
    # A blend's weights in a pairs file: only that row again.
    (folders / "pairs.csv").write_text("content,style\nphotos/p0.png,paintings/s0.png\n"
                                       "photos/p1.png,paintings/s0.png=1,paintings/s1.png=3\n")
    assert run_batch(read_pairs(folders / "pairs.csv"), "out", CONFIG).done == 2  # p0__s0 had strength 0.5
    (folders / "pairs.csv").write_text("content,style\nphotos/p0.png,paintings/s0.png\n"
                                       "photos/p1.png,paintings/s0.png=1,paintings/s1.png=2\n")
    result = run_batch(read_pairs(folders / "pairs.csv"), "out", CONFIG)
    assert (result.done, result.skipped) == (1, 1)
    assert settings_of(folders / "out" / "p1__s0+s1.png")["options"]["style_weights"] == [1.0, 2.0]


def test_a_bad_image_fails_its_own_jobs_only(folders, net):
    (folders / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    code, err = main(batch_command())
    assert code == cli.EXIT_ERROR and "Traceback" not in err, err
    manifest = rows(folders / "out")
    failed = {n: r for n, r in manifest.items() if r["status"] == "failed"}
    assert set(failed) == {"broken__s0.png", "broken__s1.png"}
    for row in failed.values():
        assert "broken.png" in row["error"] and "\n" not in row["error"], row["error"]
    assert {n for n, r in manifest.items() if r["status"] == "done"} == NAMES
    assert set(outputs(folders / "out")) == NAMES
    summary = [line for line in err.splitlines() if line.startswith("nstyle: failed: broken__s")]
    assert len(summary) == 2 and "4 painted, 0 done earlier, 2 failed of 6" in err, err


def test_names_say_what_they_are_and_never_collide(tmp_path):
    jobs = name_jobs([("a/x.jpg", ("p/y.png",), None), ("b/x.jpg", ("p/y.png",), None), ("a/X.png", ("p/y.png",), None),
                      ("c/photo one.jpg", ("p/a.png", "p/b.png"), (0.7, 0.3)), ("c/photo one.jpg", ("p/a.png", "p/b.png"), (0.7, 0.3))])
    names = [j.name for j in jobs]
    assert len(names) == 4 and len({n.casefold() for n in names}) == 4
    assert names[3] == "photo_one__a+b.png"
    assert all(re.fullmatch(r"x__y-[0-9a-f]{8}\.png", n, flags=re.I) for n in names[:3]), names
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pairs.csv").write_text("# a comment\ncontent,style\n\nphoto.jpg, a.png=0.7, b.png=0.3\n"
                                                "photo.jpg,../c.png\n")
    pairs = read_pairs(tmp_path / "sub" / "pairs.csv")
    sub = str(tmp_path / "sub")
    assert pairs == [BatchJob("photo__a+b.png", f"{sub}/photo.jpg", (f"{sub}/a.png", f"{sub}/b.png"), (0.7, 0.3)),
                     BatchJob("photo__c.png", f"{sub}/photo.jpg", (f"{tmp_path}/c.png",), None)]


@pytest.mark.parametrize("args, line", [
    (["--contents", "photos", "--styles", "nowhere", "-o", "out"], "cannot read 'nowhere' (--styles): no such file or folder"),
    (["--contents", "photos", "-o", "out"], "give --contents and --styles, or --pairs"),
    (["--contents", "photos", "--styles", "paintings", "-o", "photos"], "holds inputs of this batch"),
    (["--contents", "photos", "--styles", "paintings", "-o", "out", "--style-weights", "1", "2"], "2 style weights for 1 style images"),
    (["--pairs", "missing.csv", "-o", "out"], "cannot read the pairs file 'missing.csv'"),
])
def test_bad_command_lines_are_one_line(folders, net, args, line):
    code, err = main(["batch", *args, *OPTIONS])
    assert code != 0 and line in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not list(folders.glob("out/*.png")) and not list(folders.glob("photos/*__*"))


def test_a_file_nstyle_did_not_make_is_never_replaced(folders, net):
    (folders / "out").mkdir()
    (folders / "out" / "p0__s0.png").write_bytes(b"mine")
    result = run_batch(batch.plan_pairs(["photos/p0.png"], ["paintings/s0.png", "paintings/s1.png"]), "out", CONFIG)
    assert result.done == 1 and result.failed == [("p0__s0.png", f"refusing to replace 'out/p0__s0.png': it is not "
                                                   "an image nstyle made")]
    assert (folders / "out" / "p0__s0.png").read_bytes() == b"mine"


def test_ctrl_c_keeps_no_partial_result_and_one_batch_per_folder(folders, net):
    import fcntl

    def stop(p):
        if p.event == "step" and p.fraction > 0.5:
            raise KeyboardInterrupt

    jobs = batch.plan_pairs(["photos/p0.png"], ["paintings/s0.png"])
    result = run_batch(jobs, "out", CONFIG, callback=stop)
    assert result.interrupted and not result.ok and result.done == 0
    assert outputs(folders / "out") == {} and leftovers(folders / "out") == []
    assert rows(folders / "out")["p0__s0.png"]["status"] == "interrupted"
    with open(folders / "out" / ".nstyle-batch" / "lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="another nstyle batch is writing to 'out'"):
            run_batch(jobs, "out", CONFIG)


def test_without_ray_installed_the_message_says_how(monkeypatch):
    from nstyle import cluster
    from nstyle.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'nstyle[ray]'")):
        cluster.import_ray()
