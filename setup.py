"""Builds the Cython extensions in hbroker_ext/. They are required: there is no fallback."""
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["codec", "topics", "routing", "sqlite_writer", "harcp"]
# Libraries a module links with (the SQLite writer calls libsqlite3 directly).
LIBRARIES = {"sqlite_writer": ["sqlite3"]}

extensions = [
    Extension(f"hbroker_ext.{name}", [f"hbroker_ext/{name}.pyx"], extra_compile_args=["-O2"],
              libraries=LIBRARIES.get(name, []))
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
