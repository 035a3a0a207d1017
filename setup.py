"""Build of npconv's compiled core (metadata lives in pyproject.toml).

The extension is optional: if it fails to compile, setuptools warns and installs the package
without it, and npconv runs on its NumPy engine (one warning at import).
"""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class ParallelBuildExt(build_ext):
    """Compiles an extension's sources side by side (one compiler process per CPU): the core's ISA
    variants are separate translation units, so a 2-core build takes about the longest one."""

    def build_extension(self, ext):
        compile_one = self.compiler.compile

        def compile_all(sources, *args, **kwargs):
            if len(sources) < 2:
                return compile_one(sources, *args, **kwargs)
            with ThreadPoolExecutor(max(1, min(len(sources), os.cpu_count() or 1))) as pool:
                groups = list(pool.map(lambda source: compile_one([source], *args, **kwargs), sources))
            return [obj for group in groups for obj in group]

        self.compiler.compile = compile_all
        try:
            super().build_extension(ext)
        finally:
            del self.compiler.compile

if sys.platform == "win32":
    flags = ["/O2"]
else:
    # -fno-wrapv: Python's own -fwrapv made gcc turn the depthwise tap loads into gathers (measured
    # 1.8x slower); -g0: no debug info (a 4x larger shared object); ISA variants come from pragmas.
    flags = ["-O3", "-fno-wrapv", "-g0", "-std=gnu11", "-fno-math-errno"]

setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=[
        Extension(
            "npconv._core",
            # the slowest unit first: the pool starts it before the others
            sources=["src/npconv/csrc/variant_avx512.c", "src/npconv/csrc/variant_avx2.c",
                     "src/npconv/csrc/variant_generic.c", "src/npconv/csrc/core.c"],
            depends=[
                "src/npconv/csrc/shared.h",
                "src/npconv/csrc/variant.h",
                "src/npconv/csrc/blas.h",
                "src/npconv/csrc/kernels.h",
                "src/npconv/csrc/gemm.h",
                "src/npconv/csrc/depthwise.h",
                "src/npconv/csrc/block.h",
                "src/npconv/csrc/grouped.h",
                "src/npconv/csrc/im2col.h",
                "src/npconv/csrc/pool.h",
                "src/npconv/csrc/norm.h",
                "src/npconv/csrc/elementwise.h",
                "src/npconv/csrc/linear.h",
                "src/npconv/csrc/winograd.h",
                "src/npconv/csrc/spectral.h",
            ],
            extra_compile_args=flags,
            optional=True,
        ),
        # the cache of freed array memory (npconv.backends.memory); NumPy's API is reached at import
        Extension("npconv._arrays", sources=["src/npconv/csrc/arrays.c"], extra_compile_args=flags,
                  optional=True),
    ],
)
