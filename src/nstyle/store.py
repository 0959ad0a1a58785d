"""The web app's data folder: uploaded images, each run's files, and the history in SQLite.

Everything lives under one folder (``$NSTYLE_DATA``, else the user's data folder from
platformdirs): ``uploads/<id>.<ext>`` (an upload's bytes, named by their SHA-256, never by
the name the browser sent), ``uploads/<id>.view.jpg`` (its picture for the page),
``runs/<id>/`` (a run's output, preview, thumbnail and log) and ``history.sqlite3``.

An upload is checked before it is stored: not empty, not over the byte limit, one of the
formats nstyle reads (found by content), its pixel count read from the header and refused
above the limit before any pixel is decoded, then decoded whole (a damaged file is refused
here, not at the start of a run). Every refusal is an ``UploadError`` with one line.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import unicodedata
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageError
from .image import atomic_write_bytes

log = logging.getLogger("nstyle.store")

# Pillow's format names for what nstyle reads (MPO: the JPEG variant many cameras write).
FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp"}
READS = "JPEG, PNG, WebP, TIFF or BMP"
MAX_BYTES = 50 * 2**20       # an upload's size limit
MAX_PIXELS = 50_000_000      # an upload's pixel limit (an 8000x6000 photo is 48 million)
VIEW_SIDE = 512              # long side of the picture the page shows (and paints masks on)
ID = re.compile(r"[0-9a-f]{32}")


class UploadError(ValueError):
    """A refused upload: one line for the page, and the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def data_folder() -> Path:
    """``$NSTYLE_DATA``, else the user's data folder for nstyle (platformdirs)."""
    if os.environ.get("NSTYLE_DATA"):
        return Path(os.environ["NSTYLE_DATA"]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("nstyle"))


def display_name(name: str | None) -> str:
    """A browser's file name as a label only: its last component, printable, at most 100
    characters. It never becomes a path."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:100] or "image"


def megabytes(n: float) -> str:
    return f"{n / 2**20:.3g} MB"


def _view_jpeg(img: Image.Image, side: int, quality: int = 85) -> bytes:
    """An image (any mode) as an sRGB-ish JPEG of at most ``side`` pixels on its long side."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode.startswith("I") or img.mode == "F":  # 16-bit or float: to 8 bits
        values = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((values * (255 if values.max() <= 1 else 1 / 257)).clip(0, 255).astype(np.uint8))
    img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def check_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``data`` as an image nstyle reads, refusing a bomb before it is decoded; return it
    decoded. Raises UploadError."""
    if not data:
        raise UploadError(f"'{name}' is empty (0 bytes): choose an image file ({READS})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb warning: refused below in one line
        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as e:  # far over Pillow's own limit: its count is in the message
            count = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(count.group(1)) / 1e6:.0f} million pixels" if count else "too many pixels"
            raise UploadError(f"'{name}' is too large: {size}; the limit is {max_pixels / 1e6:.0f} million", 413) from None
        except Exception:
            raise UploadError(f"'{name}' is not an image nstyle reads ({READS})", 415) from None
        if img.format not in FORMATS:
            raise UploadError(f"'{name}' is a {img.format} image; nstyle reads {READS}", 415)
        w, h = img.size
        if w <= 0 or h <= 0:
            raise UploadError(f"'{name}' has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise UploadError(f"'{name}' is {w}x{h} pixels ({w * h / 1e6:.0f} million); the limit is "
                              f"{max_pixels / 1e6:.0f} million", 413)
        try:
            img.load()
        except Exception:
            raise UploadError(f"'{name}' is damaged: its image data is truncated or corrupt") from None
    return img


class Store:
    """The data folder and its SQLite history. Safe to use from several threads."""

    def __init__(self, folder: str | os.PathLike | None = None, max_bytes: int = MAX_BYTES,
                 max_pixels: int = MAX_PIXELS):
        self.folder = Path(folder) if folder is not None else data_folder()
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        for sub in ("uploads", "runs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.folder / "history.sqlite3", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, name TEXT, "
                             "ext TEXT, width INTEGER, height INTEGER, bytes INTEGER, created REAL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created REAL, "
                             "started REAL, finished REAL, status TEXT, message TEXT, "
                             "inputs TEXT, settings TEXT, result TEXT)")
            # A run a previous server left running did not finish (one stopped on the way out
            # was recorded as stopped); queued ones stay queued, for the new server to run.
            self._db.execute("UPDATE runs SET status = 'cancelled', message = 'the server stopped before "
                             "it finished' WHERE status = 'running'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- uploads ---------------------------------------------------------------------

    def add_upload(self, data: bytes, name: str | None) -> dict:
        """Check and store an upload; return its record. The same bytes give the same id."""
        name = display_name(name)
        if len(data) > self.max_bytes:
            raise UploadError(f"'{name}' is {megabytes(len(data))}; the limit is {megabytes(self.max_bytes)}", 413)
        img = check_image(data, name, self.max_pixels)
        upload_id = hashlib.sha256(data).hexdigest()[:32]
        ext = FORMATS[img.format]
        path = self.upload_path(upload_id, ext)
        try:
            view = _view_jpeg(img, VIEW_SIDE)
        except Exception:
            raise UploadError(f"'{name}' cannot be converted to RGB: an unusual image mode ({img.mode})") from None
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: turned a quarter
            w, h = h, w
        if not path.exists():
            atomic_write_bytes(path, data)
        atomic_write_bytes(self.folder / "uploads" / f"{upload_id}.view.jpg", view)
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (upload_id, name, ext, w, h, len(data), time.time()))
        return {"id": upload_id, "name": name, "width": w, "height": h}

    def upload(self, upload_id: str) -> dict | None:
        if not ID.fullmatch(upload_id or ""):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        if row is None or not self.upload_path(row["id"], row["ext"]).is_file():
            return None
        return {"id": row["id"], "name": row["name"], "ext": row["ext"], "width": row["width"],
                "height": row["height"]}

    def upload_path(self, upload_id: str, ext: str) -> Path:
        return self.folder / "uploads" / f"{upload_id}.{ext}"

    def upload_view(self, upload_id: str) -> Path | None:
        path = self.folder / "uploads" / f"{upload_id}.view.jpg"
        return path if self.upload(upload_id) and path.is_file() else None

    def add_example(self, path: Path) -> dict:
        return self.add_upload(path.read_bytes(), path.name)

    # --- runs ------------------------------------------------------------------------

    def run_folder(self, run_id: str) -> Path:
        return self.folder / "runs" / run_id

    def create_run(self, run_id: str, inputs: dict, settings: dict) -> dict:
        self.run_folder(run_id).mkdir()
        with self._lock, self._db:
            self._db.execute("INSERT INTO runs (id, created, status, inputs, settings, result) "
                             "VALUES (?, ?, 'queued', ?, ?, '{}')",
                             (run_id, time.time(), json.dumps(inputs), json.dumps(settings)))
        return self.run(run_id)

    def update_run(self, run_id: str, **fields) -> dict | None:
        if "result" in fields:
            fields["result"] = json.dumps(fields["result"])
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._lock, self._db:
            self._db.execute(f"UPDATE runs SET {names} WHERE id = ?", (*fields.values(), run_id))
        return self.run(run_id)

    def run(self, run_id: str) -> dict | None:
        if not ID.fullmatch(run_id or ""):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._record(row)

    def runs(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [self._record(row) for row in rows]

    def _record(self, row: sqlite3.Row) -> dict:
        record = {k: row[k] for k in ("id", "created", "started", "finished", "status", "message")}
        record.update(inputs=json.loads(row["inputs"]), settings=json.loads(row["settings"]),
                      result=json.loads(row["result"] or "{}"))
        folder = self.run_folder(row["id"])
        record["output"] = (folder / "output.png").is_file()
        record["log"] = (folder / "output.json").is_file()
        return record

    def queued(self) -> list[dict]:
        """The runs waiting to start, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE status = 'queued' ORDER BY created").fetchall()
        return [self._record(row) for row in rows]

    def seconds_per_size(self) -> float | None:
        """How long finished runs took per (size / 1000 px)^2, the median of the last five,
        for the queue's estimates; None before any."""
        with self._lock:
            rows = self._db.execute("SELECT result FROM runs WHERE status = 'done' "
                                    "ORDER BY finished DESC LIMIT 5").fetchall()
        rates = []
        for row in rows:
            result = json.loads(row["result"] or "{}")
            if result.get("seconds") and result.get("side"):
                rates.append(result["seconds"] / (result["side"] / 1000) ** 2)
        return sorted(rates)[len(rates) // 2] if rates else None

    def delete_run(self, run_id: str) -> None:
        """Delete a run's record and files, and the uploads no other run uses (unless they
        came in the last hour: the page may be about to use them again)."""
        record = self.run(run_id)
        if record is None:
            return
        with self._lock, self._db:
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_folder(run_id), ignore_errors=True)
        self.prune_uploads(max_age=3600)

    def prune_uploads(self, max_age: float) -> None:
        """Remove uploads that no run uses and that are older than ``max_age`` seconds."""
        with self._lock:
            used = set()
            for row in self._db.execute("SELECT inputs FROM runs"):
                inputs = json.loads(row["inputs"])
                used.add(inputs["content"]["id"])
                used.update(s["id"] for s in inputs["styles"])
                used.update(inputs.get("masks") or ())
            old = self._db.execute("SELECT id, ext FROM uploads WHERE created < ?",
                                   (time.time() - max_age,)).fetchall()
            gone = [row for row in old if row["id"] not in used]
            with self._db:
                self._db.executemany("DELETE FROM uploads WHERE id = ?", [(row["id"],) for row in gone])
        for row in gone:
            for path in (self.upload_path(row["id"], row["ext"]), self.folder / "uploads" / f"{row['id']}.view.jpg"):
                path.unlink(missing_ok=True)


def write_views(output: Path, preview_side: int = 1024, thumb_side: int = 256) -> None:
    """The page's pictures of a finished run's output: preview.jpg and thumb.jpg beside it."""
    try:
        with Image.open(output) as img:
            img.load()
            atomic_write_bytes(output.with_name("preview.jpg"), _view_jpeg(img, preview_side, 90))
            atomic_write_bytes(output.with_name("thumb.jpg"), _view_jpeg(img, thumb_side))
    except (OSError, ImageError) as e:
        log.warning("cannot make the preview of %s: %s", output, e)
