"""The one thing pyproject.toml cannot say without an experimental table: the C extension.

``childkit.ipc._speedups`` holds C twins of the IPC hot path (see its source). It is
optional: without a C compiler the build skips it and childkit runs on the Python twins.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "childkit.ipc._speedups",
            sources=["src/childkit/ipc/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
