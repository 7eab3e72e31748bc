"""Cython modules of hbroker: pure computation, no I/O."""
