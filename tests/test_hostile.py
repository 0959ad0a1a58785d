"""The hardening corpus: bad inputs and faults, as a hostile user would give them.

Every case asserts what nstyle promises: the exit code; exactly one stderr line
``nstyle: error: ...`` naming the cause (or, for a stop, the line saying what was saved); no
traceback; no file left that was not there before (no output, no snapshot, no temporary file)
unless the case is about keeping work; and every input byte-identical afterwards. Command-line
cases run in this process through ``cli.main`` (test_cli.run_main); the faults that need a real
process (a full disk, the memory ceiling) start one. The eight numbered cases of issue 10 are
marked ``#1`` ... ``#8`` in their ids.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny, write_image
from nstyle import Config, ConfigError, Interrupted, Stylizer, stylize
from nstyle.weights import craft_package_file
from test_cli import assert_one_error_line, cli_env, describe, run_main

RUN = ["-s", "32", "-n", "1", "--scales", "1", "--model", "vgg16bn-craft"]


def tree(d: Path) -> dict[str, bytes | str]:
    """Every entry under ``d``: a regular file's bytes, else its kind."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_fifo():
            out[rel] = "fifo"
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "w"
    d.mkdir()
    write_image(tiny(1, 32, 40), d / "c.png")
    write_image(tiny(2, 40, 40), d / "s.png")
    write_image(tiny(3, 32, 40), d / "m.png")
    return d


def _weights_copy(d: Path) -> str:
    shutil.copyfile(craft_package_file(), d / "w.pth")
    return "w.pth"


def _fifo(d: Path, name: str) -> str:
    os.mkfifo(d / name)
    return name


def _truncate(d: Path, name: str, data: bytes) -> str:
    (d / name).write_bytes(data)
    return name


def _image_bytes(d: Path, fmt: str) -> bytes:
    from PIL import Image
    path = d / f"tmp_full.{fmt}"
    Image.new("RGB", (40, 32), (120, 30, 200)).save(path)
    data = path.read_bytes()
    path.unlink()
    return data


# Each case: id, setup(d) -> arguments (paths relative to d), expected exit code, message regex.
ERRORS = [
    # --- writes onto what the run reads, or onto another output of the same run ---
    ("-o is the photo", lambda d: ["c.png", "s.png", "-o", "c.png"], 1, r"refusing to write the output .* over the photo"),
    ("-o is the painting", lambda d: ["c.png", "s.png", "-o", "s.png"], 1, r"over the painting"),
    ("-o is the mask", lambda d: ["c.png", "s.png", "--masks", "m.png", "-o", "m.png"], 1, r"over the mask"),
    ("#1 --log is -o", lambda d: ["c.png", "s.png", "-o", "o.png", "--log", "o.png"], 1, r"would both be written"),
    ("--log is the photo", lambda d: ["c.png", "s.png", "-o", "o.png", "--log", "c.png"], 1, r"the log .* over the photo"),
    ("#3 --log is --weights", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights", _weights_copy(d), "--log", "w.pth"],
     1, r"the log .* over the weights file"),
    ("#2 a snapshot is the photo",
     lambda d: [shutil.copyfile(d / "c.png", d / "o_1.png").name, "s.png", "-o", "o.png", "--save-every", "1",
                "-n", "3"], 1, r"snapshot 'o_1.png' .* over the photo"),
    ("a snapshot is the painting",
     lambda d: ["c.png", shutil.copyfile(d / "s.png", d / "o_2.png").name, "-o", "o.png", "--save-every", "2",
                "-n", "3"], 1, r"snapshot 'o_2.png' .* over the painting"),
    ("a snapshot is the log", lambda d: ["c.png", "s.png", "-o", "o.png", "--save-every", "1", "-n", "3",
                                         "--log", "o_2.png"], 1, r"would both be written"),
    ("-o is a symlink to the photo", lambda d: [os.symlink("c.png", d / "l.png") or "c.png", "s.png", "-o", "l.png"],
     1, r"over the photo"),
    ("-o is a hard link to the photo", lambda d: [os.link(d / "c.png", d / "h.png") or "c.png", "s.png", "-o", "h.png"],
     1, r"over the photo"),
    ("-o reaches the photo through ..", lambda d: [(d / "sub").mkdir() or "c.png", "s.png", "-o", "sub/../c.png"],
     1, r"over the photo"),
    ("--log through a symlinked folder to the painting",
     lambda d: [os.symlink(d, d / "alias") or "c.png", "s.png", "-o", "o.png", "--log", "alias/s.png"],
     1, r"over the painting"),
    ("-o is the weights file", lambda d: ["c.png", "s.png", "--weights", _weights_copy(d), "-o",
                                          os.link(d / "w.pth", d / "w.png") or "w.png"], 1, r"over the weights file"),
    # --- special files: refused at once, never a hang ---
    ("#4 the photo is a FIFO with no writer", lambda d: [_fifo(d, "f.png"), "s.png", "-o", "o.png"], 1,
     r"'f.png': is a named pipe \(FIFO\), not a regular file"),
    ("the painting is a FIFO", lambda d: ["c.png", _fifo(d, "f.png"), "-o", "o.png"], 1, r"named pipe"),
    ("a mask is a FIFO", lambda d: ["c.png", "s.png", "--masks", _fifo(d, "f.png"), "-o", "o.png"], 1, r"named pipe"),
    ("the photo is /dev/zero", lambda d: ["/dev/zero", "s.png", "-o", "o.png"], 1, r"character device"),
    ("the photo is a folder", lambda d: [(d / "dir").mkdir() or "dir", "s.png", "-o", "o.png"], 1, r"is a directory"),
    ("--weights is a FIFO", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights", _fifo(d, "f.pth")], 1,
     r"not a regular file"),
    ("--weights is a folder", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights", (d / "wd").mkdir() or "wd"],
     1, r"is a directory; give the file itself"),
    ("-o in a missing folder", lambda d: ["c.png", "s.png", "-o", "nope/o.png"], 1, r"does not exist"),
    ("-o is a folder", lambda d: ["c.png", "s.png", "-o", (d / "od.png").mkdir() or "od.png"], 1, r"is a directory"),
    ("-o of a format nstyle does not write", lambda d: ["c.png", "s.png", "-o", "o.gif"], 1, r"unsupported output"),
    # --- numeric options at 0, negative, NaN, inf, huge ---
    ("-s 0", lambda d: ["c.png", "s.png", "-o", "o.png", "-s", "0"], 1, r"size must be between 32 and 65536"),
    ("-s -5", lambda d: ["c.png", "s.png", "-o", "o.png", "-s", "-5"], 1, r"size must be between 32 and 65536"),
    ("-s huge", lambda d: ["c.png", "s.png", "-o", "o.png", "-s", "1000000"], 1, r"size must be between"),
    ("-s nan", lambda d: ["c.png", "s.png", "-o", "o.png", "-s", "nan"], 2, r"not a whole number"),
    ("-n 0", lambda d: ["c.png", "s.png", "-o", "o.png", "-n", "0"], 1, r"iterations must be between 1"),
    ("-n -1", lambda d: ["c.png", "s.png", "-o", "o.png", "-n", "-1"], 1, r"iterations must be between 1"),
    ("-n huge", lambda d: ["c.png", "s.png", "-o", "o.png", "-n", "10000000"], 1, r"iterations must be between 1"),
    ("--style-weight -1", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-weight", "-1"], 1, r"at least 0"),
    ("--style-weight nan", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-weight", "nan"], 1, r"finite number"),
    ("--style-weight inf", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-weight", "inf"], 1, r"finite number"),
    ("--style-weight 1e308", lambda d: ["c.png", "s.png", "-o", "o.png", *RUN, "--style-weight", "1e308"], 1,
     r"at the start: a weight or an input is out of range"),
    ("--content-weight inf", lambda d: ["c.png", "s.png", "-o", "o.png", "--content-weight", "inf"], 1, r"finite"),
    ("--tv-weight -0.5", lambda d: ["c.png", "s.png", "-o", "o.png", "--tv-weight", "-0.5"], 1, r"at least 0"),
    ("--style-strength 1.5", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-strength", "1.5"], 1,
     r"between 0 and 1"),
    ("--style-strength nan", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-strength", "nan"], 1, r"finite"),
    ("--style-scale 0", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-scale", "0"], 1, r"greater than 0"),
    ("#8 --style-scale 0.001", lambda d: ["c.png", "s.png", "-o", "o.png", *RUN, "--style-scale", "0.001"], 1,
     r"would be 1x1 px at --style-scale 0.001, and vgg16bn-craft needs at least 16 px"),
    ("#5 --style-scale 1000", lambda d: ["c.png", "s.png", "-o", "o.png", *RUN, "--style-scale", "1000"], 1,
     r"at --style-scale 1000 would be 32000x32000 px and needs about .* GB"),
    ("--noise-ratio 2", lambda d: ["c.png", "s.png", "-o", "o.png", "--noise-ratio", "2"], 1, r"between 0 and 1"),
    ("--lr 0", lambda d: ["c.png", "s.png", "-o", "o.png", "--lr", "0"], 1, r"greater than 0"),
    ("--tolerance -1", lambda d: ["c.png", "s.png", "-o", "o.png", "--tolerance", "-1"], 1, r"at least 0"),
    ("--min-size 0", lambda d: ["c.png", "s.png", "-o", "o.png", "--min-size", "0"], 1, r"min size must be"),
    ("--tile-size 1", lambda d: ["c.png", "s.png", "-o", "o.png", "--tile-size", "1"], 1, r"tile size must be"),
    ("--scales 11", lambda d: ["c.png", "s.png", "-o", "o.png", "--scales", "11"], 1, r"scales must be between"),
    ("--save-every -1", lambda d: ["c.png", "s.png", "-o", "o.png", *RUN, "--save-every", "-1"], 1, r"at least 0"),
    ("--seed -1", lambda d: ["c.png", "s.png", "-o", "o.png", "--seed", "-1"], 1, r"seed must be between 0"),
    ("--style-weights all 0", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-weights", "0"], 1, r"not all be zero"),
    # --- malformed images of each format nstyle reads ---
    ("an empty file", lambda d: [_truncate(d, "e.png", b""), "s.png", "-o", "o.png"], 1, r"empty file"),
    ("text named .png", lambda d: [_truncate(d, "t.png", b"hello\n" * 50), "s.png", "-o", "o.png"], 1, r"not an image"),
    *[(f"a truncated .{fmt}", lambda d, fmt=fmt: [_truncate(d, f"t.{fmt}", _image_bytes(d, fmt)[:60]), "s.png", "-o",
                                                  "o.png"], 1, r"cannot read 't\.\w+'")
      for fmt in ("png", "jpg", "webp", "tiff", "bmp", "gif")],
    ("#8 a 1x300 photo", lambda d: [write_image(tiny(5, 1, 300), d / "thin.png").name, "s.png", "-o", "o.png", *RUN],
     1, r"the photo \(300x1 px\) is .* needs at least 16 px on each side"),
    ("#8 a 1x300 painting", lambda d: ["c.png", write_image(tiny(5, 1, 300), d / "thin.png").name, "-o", "o.png", *RUN],
     1, r"the painting \(300x1 px\) would be .* needs at least 16 px"),
    # --- weights: truncated, tampered in layout, of another kind ---
    ("truncated CRAFT weights", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights",
                                           _truncate(d, "w.pth", craft_package_file().read_bytes()[:100_000])],
     1, r"not a PyTorch checkpoint"),
    ("a pickle as --weights", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights",
                                         _truncate(d, "w.pth", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")],
     1, r"not a PyTorch checkpoint|not a CRAFT"),
    ("an empty --weights", lambda d: ["c.png", "s.png", "-o", "o.png", "--weights", _truncate(d, "w.h5", b"")], 1,
     r"cannot read|not"),
    ("a CRAFT file for vgg19", lambda d: ["c.png", "s.png", "-o", "o.png", "--model", "vgg19", "--weights",
                                          _weights_copy(d)], 1, r"cannot read Keras weights"),
    ("unknown layer", lambda d: ["c.png", "s.png", "-o", "o.png", "--style-layers", "relu9_9"], 1, r"unknown layer"),
]


@pytest.mark.parametrize("case, setup, code, message", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_is_one_line_and_changes_nothing(work, case, setup, code, message):
    args = setup(work)
    before = tree(work)
    res = run_main(args, work, cli_env(work.parent))
    line = assert_one_error_line(res)
    assert res.returncode == code, describe(res)
    assert re.search(message, line), f"{line!r} does not match {message!r}"
    assert tree(work) == before  # every input byte-identical, nothing written, no temporary file


def test_cache_that_is_a_file(work):
    (work.parent / "cachefile").write_bytes(b"x")
    env = cli_env(work.parent, NSTYLE_CACHE=str(work.parent / "cachefile"))
    before = tree(work)
    res = run_main(["c.png", "s.png", "-o", "o.png", "--model", "vgg19"], work, env)
    assert "is a file, not a folder" in assert_one_error_line(res)
    assert tree(work) == before and (work.parent / "cachefile").read_bytes() == b"x"


def test_stale_temp_of_a_killed_save_is_removed(work):
    # What SIGKILL during a save leaves: .o.png.<dead pid>.XXXX.tmp, zero bytes.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = work / f".o.png.{int(dead.stdout)}.abcd.tmp"
    stale.write_bytes(b"")
    res = run_main(["c.png", "s.png", "-o", "o.png", *RUN, "-q"], work, cli_env(work.parent))
    assert res.returncode == 0, describe(res)
    assert not stale.exists() and (work / "o.png").exists()


# --- stops at each phase of a run ---------------------------------------------------------


def _interrupt_on_call(monkeypatch, target, name, n):
    """Raise KeyboardInterrupt (as Ctrl-C does) on the n-th call of target.name."""
    real = getattr(target, name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)
    return calls


def test_ctrl_c_while_loading_saves_nothing(work, monkeypatch):
    from nstyle import jobs
    _interrupt_on_call(monkeypatch, jobs, "load_image", 2)  # reading the painting
    before = tree(work)
    res = run_main(["c.png", "s.png", "-o", "o.png", *RUN], work, cli_env(work.parent))
    assert res.returncode == 130 and "Traceback" not in res.stderr, describe(res)
    assert tree(work) == before


def test_ctrl_c_in_the_first_step_of_the_second_scale_keeps_the_first(work, monkeypatch):
    """#6: the first scale's work is saved, not 'nothing saved'."""
    from nstyle import objective
    # scale 1: targets + 2 steps = evaluations 1-2; the first evaluation of scale 2 is call 3
    _interrupt_on_call(monkeypatch, objective.Objective, "__call__", 3)
    res = run_main(["c.png", "s.png", "-o", "o.png", "-s", "64", "--min-size", "32", "--scales", "2", "-n", "2",
                    "--model", "vgg16bn-craft"], work, cli_env(work.parent))
    assert res.returncode == 130, describe(res)
    assert "interrupted at iteration 2/4; saved" in res.stderr
    assert (work / "o.png").exists()
    from PIL import Image
    assert Image.open(work / "o.png").size == (64, 51)  # at the output size


def test_ctrl_c_between_scales_keeps_the_first(work, monkeypatch):
    from nstyle import engine
    _interrupt_on_call(monkeypatch, engine, "_upsample", 1)  # moving from scale 1 to scale 2
    res = run_main(["c.png", "s.png", "-o", "o.png", "-s", "64", "--min-size", "32", "--scales", "2", "-n", "2",
                    "--model", "vgg16bn-craft"], work, cli_env(work.parent))
    assert res.returncode == 130 and "interrupted at iteration 2/4; saved" in res.stderr, describe(res)
    from PIL import Image
    assert Image.open(work / "o.png").size == (64, 51)


def test_ctrl_c_while_saving_leaves_no_partial_file(work, monkeypatch):
    from PIL import Image
    real = Image.Image.save

    def save(self, fp, *args, **kwargs):
        real(self, fp, *args, **kwargs)  # the bytes are on disk, under the temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save)
    before = tree(work)
    res = run_main(["c.png", "s.png", "-o", "o.png", *RUN], work, cli_env(work.parent))
    assert res.returncode == 130, describe(res)
    assert tree(work) == before  # neither o.png nor its temporary file


def test_full_disk_is_one_line_and_no_file(work):
    """A write that fails for want of space (RLIMIT_FSIZE: writes past it fail with EFBIG,
    as a full disk fails them with ENOSPC) is one line, and no partial file stays."""
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500)); "
              "from nstyle.cli import main; sys.exit(main())")
    before = tree(work)
    res = subprocess.run([sys.executable, "-c", script, "c.png", "s.png", "-o", "o.png", *RUN, "-q"], cwd=work,
                         env=cli_env(work.parent), capture_output=True, text=True, timeout=240)
    line = assert_one_error_line(res)
    assert "cannot write 'o.png'" in line and "too large" in line.lower(), line
    assert tree(work) == before


def test_memory_ceiling_turns_a_runaway_into_a_smaller_run(work):
    """The process caps its own memory (cli.memory_ceiling, RLIMIT_DATA): when the plan is
    wrong (here: it is told nothing of the memory free), an allocation past the cap is an
    error the job retries at a smaller size, said in one line each, not a kill by the kernel."""
    script = "\n".join([
        "import resource, sys",
        "import nstyle.cli as cli, nstyle.plan as plan",
        "plan.available_bytes = lambda device: None  # a plan that cannot see the memory",
        "def ceiling(device):",
        "    resource.setrlimit(resource.RLIMIT_DATA, (1536 * 2**20, resource.RLIM_INFINITY))",
        "cli.memory_ceiling = ceiling",
        "sys.exit(cli.main())"])
    res = subprocess.run([sys.executable, "-c", script, "c.png", "s.png", "-o", "o.png", "-s", "1400", "-n", "1",
                          "--scales", "1", "--model", "vgg16bn-craft", "--precision", "float32"],
                         cwd=work, env=cli_env(work.parent), capture_output=True, text=True, timeout=300)
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, describe(res)  # never killed
    assert "out of memory at --size 1400; trying again at 1120" in res.stderr, describe(res)
    if res.returncode == 0:  # (on a loaded machine the retries may go down past 64 px: one error line)
        from PIL import Image
        assert max(Image.open(work / "o.png").size) < 1400
    else:
        assert res.stderr.splitlines()[-1].startswith("nstyle: error:") and not (work / "o.png").exists()


# --- the Python API: the same checks at its boundary ---------------------------------------

API = [
    ("#7 a float tensor in 0-255", dict(content=tiny(0) * 255), r"values in \[0, 1\].*divide 0-255 values by 255"),
    ("NaN pixels", dict(content=tiny(0) * float("nan")), r"NaN or infinite"),
    ("an empty tensor", dict(content=torch.rand(3, 0, 10)), r"is empty"),
    ("a (4, H, W) tensor", dict(content=torch.rand(4, 20, 20)), r"must be a \(3, H, W\) tensor"),
    ("an int64 tensor", dict(content=torch.ones(3, 20, 20, dtype=torch.int64)), r"uint8"),
    ("a list", dict(content=[[0.5]]), r"must be a path or a \(3, H, W\) tensor"),
    ("a painting in 0-255", dict(styles=[tiny(1) * 255]), r"the painting must have values"),
    ("a mask in 0-255", dict(masks=[tiny(1)[:1] * 255]), r"mask 1 must have values"),
    ("size=40.5", dict(config=dict(size=40.5)), r"size must be a whole number, not 40.5"),
    ("iterations=2.0", dict(config=dict(iterations=2.0)), r"iterations must be a whole number, not 2.0"),
    ("line_search=1", dict(config=dict(line_search=1)), r"line search must be true or false"),
    ("style_weight='1'", dict(config=dict(style_weight="1")), r"style weight must be a number"),
    ("no style", dict(styles=[]), r"at least one style"),
    ("two masks for one style", dict(masks=[tiny(1)[:1], tiny(2)[:1]]), r"2 masks for 1 style"),
]


@pytest.mark.parametrize("case, given, message", API, ids=[c[0] for c in API])
def test_api_refuses_in_one_line(random_network, case, given, message):
    content = given.get("content", tiny(0))
    styles = given.get("styles", [tiny(1)])
    with pytest.raises(ConfigError, match=message) as info:
        config = Config(**{"size": 32, "iterations": 1, "scales": 1, **given.get("config", {})})
        stylize(content, styles, config, masks=given.get("masks"))
    assert "\n" not in str(info.value)


def test_api_takes_uint8_and_leaves_the_callers_tensors(random_network):
    """#7: uint8 is read as 0-255; a tensor that requires grad is copied, not optimised."""
    as_bytes = (tiny(0) * 255).round().to(torch.uint8)
    a = stylize(as_bytes, [tiny(1)], Config(size=32, iterations=1, scales=1))
    b = stylize(as_bytes.float() / 255, [tiny(1)], Config(size=32, iterations=1, scales=1))
    assert torch.allclose(a, b) and a.mean() < 0.95  # not all white
    grad = tiny(0).requires_grad_(True)
    keep = grad.detach().clone()
    stylize(grad, [tiny(1)], Config(size=32, iterations=1, scales=1))
    assert torch.equal(grad.detach(), keep) and grad.grad is None


def test_api_takes_a_1x1_image(random_network):
    """#8: a 1x1 photo or painting is a small image like any other (upsampled)."""
    image = stylize(torch.rand(3, 1, 1), [torch.rand(3, 1, 1)], Config(size=32, iterations=1, scales=1))
    assert image.shape == (3, 32, 32)


def test_cancel_before_start_and_ctrl_c_keep_work(random_network):
    engine = Stylizer(Config(size=32, iterations=3, scales=1))
    with pytest.raises(Interrupted) as info:
        def stop(p):
            raise KeyboardInterrupt
        engine.stylize(tiny(0), [tiny(1)], callback=stop)
    assert info.value.progress.step == 1 and torch.equal(info.value.image, engine.current_image())
