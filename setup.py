"""Builds the Cython extensions in hbroker_ext/. They are required: there is no fallback."""
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["codec", "topics"]

extensions = [
    Extension(f"hbroker_ext.{name}", [f"hbroker_ext/{name}.pyx"], extra_compile_args=["-O2"])
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
