"""The build of imgrad's optional C extension; everything else is in pyproject.toml.

``imgrad._hysteresis`` (``imgrad/_hysteresis.c``: the CPython C API and the buffer protocol, no
torch or numpy headers) is ``optional``: where it cannot be compiled (no C compiler or Python
headers) the install still succeeds and imgrad runs its torch path (see ``imgrad/_native.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "imgrad._hysteresis",
            sources=["imgrad/_hysteresis.c"],
            optional=True,
        )
    ]
)
