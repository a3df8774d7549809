"""The compiled part of lmtrace: parsers/_evtx_scan.c (pyevtx-rs records -> Arrow columns).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is
found the install goes on without it and the reader builds the same rows in Python,
3-4x slower (``lmtrace --version`` says which). The flags ask for warnings to be errors
nowhere: a newer compiler's new warning must not stop an install.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "parsers._evtx_scan",
            sources=["parsers/_evtx_scan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
