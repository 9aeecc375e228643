"""The optional C accelerator of the row differ (syncd/engine/_rowdiff.c).

Everything else is in pyproject.toml. `optional=True`: without a C compiler or Python's headers the
install still succeeds and syncd uses the pure-Python differ (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "syncd.engine._rowdiff",
            sources=["syncd/engine/_rowdiff.c"],
            depends=["syncd/engine/vendor/xxhash.h"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
