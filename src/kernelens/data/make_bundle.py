"""Rebuild the data files shipped in ``kernelens/data/bundled/`` from their upstream sources.

Usage (each part is optional; the manifest keeps the entries of parts not rebuilt)::

    python -m kernelens.data.make_bundle --fashion-mnist /usr/share/datasets/fashion-mnist

``--fashion-mnist DIR`` reads the four official IDX files (as installed by the Debian package
``dataset-fashion-mnist``, or extracted from it with ``dpkg-deb -x``) and writes the first
10000 train / 2000 test examples of :func:`balanced_order` (``seed=0``), i.e. 1000 / 200 per
class, as gzip-compressed IDX files, together with the examples' positions in the official
files. The output is byte-reproducible (gzip level 9, mtime 0) and ``MANIFEST.json`` records
each file's size and SHA-256, which the loaders check.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._bundle import BUNDLE_DIR, MANIFEST_NAME, sha256_file
from ._fashion_mnist import BUNDLE_FILES, FULL_FILES, balanced_order, idx_path, read_full
from ._idx import read_idx, write_idx

__all__ = ["BUNDLE_SIZES", "bundle_fashion_mnist", "main"]

BUNDLE_SIZES = {"train": 10000, "test": 2000}

FASHION_MNIST_LICENCE = """\
Fashion-MNIST subset shipped with kernelens
===========================================

The files fashion-mnist-*.idx.gz hold 10000 training and 2000 test images (1000 and 200 per
class) with their labels, cut unchanged from Fashion-MNIST by Zalando Research
(https://github.com/zalandoresearch/fashion-mnist), as packaged by Debian
(dataset-fashion-mnist). The *-index files give each example's position in the official
train-images-idx3-ubyte / t10k-images-idx3-ubyte files. kernelens/data/make_bundle.py
reproduces them byte for byte.

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def _record(out: Path, name: str, files: dict[str, dict[str, object]], origin: str) -> None:
    path = out / name
    files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path), "origin": origin}


def bundle_fashion_mnist(source_dir: Path, out: Path) -> dict[str, dict[str, object]]:
    """Write the Fashion-MNIST subset and its licence note into ``out``.

    Returns:
        Manifest entries (``bytes``, ``sha256``, ``origin``) of the files written.
    """
    files: dict[str, dict[str, object]] = {}
    for split, n in BUNDLE_SIZES.items():
        images, labels = read_full(source_dir, split)
        take = balanced_order(labels, 0)[:n]
        arrays = (images[take], labels[take], take.astype(np.int32))
        image_file, label_file = (idx_path(source_dir, stem) for stem in FULL_FILES[split])
        origins = (
            f"rows of {image_file.name} (sha256 {sha256_file(image_file)})",
            f"entries of {label_file.name} (sha256 {sha256_file(label_file)})",
            f"positions of the rows in {image_file.name}: balanced_order(labels, 0)[:{n}]",
        )
        for name, array, origin in zip(BUNDLE_FILES[split], arrays, origins, strict=True):
            write_idx(out / name, array)
            if not np.array_equal(read_idx.__wrapped__(out / name), array):
                raise RuntimeError(f"round trip of {out / name} failed")
            _record(out, name, files, origin)
    (out / "FASHION-MNIST-LICENCE.txt").write_text(FASHION_MNIST_LICENCE, encoding="utf-8")
    return files


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fashion-mnist", type=Path, help="directory with the 4 official IDX files"
    )
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="bundle directory")
    args = parser.parse_args(argv)
    if args.fashion_mnist is None:
        parser.error("nothing to do: pass --fashion-mnist DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST_NAME
    manifest = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.is_file()
        else {"files": {}}
    )
    manifest["files"].update(bundle_fashion_mnist(args.fashion_mnist, args.out))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
