"""The compiled part of lmtrace: parsers/_evtx_scan.c (pyevtx-rs records -> Arrow columns).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
found the install goes on without it and the reader builds the same rows in Python,
2-4x slower (``lmtrace --version`` says which). The build records a digest of the C
source in the module (``SOURCE``), so that a checkout whose C changed after its last
``pip install -e .`` is not read with the older build (parsers/evtx_reader.py).
"""

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

SOURCE = Path(__file__).parent / "parsers" / "_evtx_scan.c"

setup(
    ext_modules=[
        Extension(
            "parsers._evtx_scan",
            sources=["parsers/_evtx_scan.c"],
            define_macros=[
                ("SCAN_SOURCE", '"' + hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16] + '"')
            ],
            extra_compile_args=["-O2"],
            # its rows are written by a second thread beside the puller (POSIX threads)
            extra_link_args=["-pthread"] if os.name == "posix" else [],
            optional=True,
        )
    ]
)
