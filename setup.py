"""Build of npconv's compiled core (metadata lives in pyproject.toml).

The extension is optional: if it fails to compile, setuptools warns and installs the package
without it, and npconv runs on its NumPy engine (one warning at import).
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    flags = ["/O2"]
else:
    # -fno-wrapv: Python's own -fwrapv made gcc turn the depthwise tap loads into gathers (measured
    # 1.8x slower); -g0: no debug info (a 4x larger shared object); ISA variants come from pragmas.
    flags = ["-O3", "-fno-wrapv", "-g0", "-std=gnu11", "-fno-math-errno"]

setup(
    ext_modules=[
        Extension(
            "npconv._core",
            sources=["src/npconv/csrc/core.c"],
            depends=[
                "src/npconv/csrc/blas.h",
                "src/npconv/csrc/kernels.h",
                "src/npconv/csrc/gemm.h",
                "src/npconv/csrc/depthwise.h",
                "src/npconv/csrc/grouped.h",
                "src/npconv/csrc/im2col.h",
                "src/npconv/csrc/pool.h",
                "src/npconv/csrc/norm.h",
                "src/npconv/csrc/elementwise.h",
                "src/npconv/csrc/winograd.h",
            ],
            extra_compile_args=flags,
            optional=True,
        ),
        # the cache of freed array memory (npconv.backends.memory); NumPy's API is reached at import
        Extension("npconv._arrays", sources=["src/npconv/csrc/arrays.c"], extra_compile_args=flags,
                  optional=True),
    ],
)
