"""The one compiled part of QuantScope, optional: the host reducer's one-pass kernel (engine/compare/_pairstats.c).
Everything else is in pyproject.toml. Where no C compiler is at hand the install goes on without it and the reducer
uses its numpy path (the same statistics, about 2.5x slower on one core and 4x on two; `quantscope doctor` says which
one runs)."""

import sys

from setuptools import Extension, setup

# The kernel's float32 sums are vectorized only where the compiler may reassociate them; nothing else of -ffast-math
# (NaN, inf and division stay IEEE, which the histogram's bins rely on).
FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
                                            "-fno-trapping-math"]

setup(ext_modules=[Extension("engine.compare._pairstats", ["engine/compare/_pairstats.c"], extra_compile_args=FLAGS,
                             optional=True)])
