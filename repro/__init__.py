"""repro: a reproduction suite for Perceiver AR (Hawthorne et al., ICML 2022).

Importing ``repro`` (or any of its modules) changes nothing process-wide: no allocator tuning, no
environment variables, no logging configuration. Process-wide tuning belongs to the programs:
``cli.main`` applies glibc's allocator settings (``repro.allocator.tune_allocator``) before a
command starts JAX's threads, as do ``tests/conftest.py`` and each benchmark's ``main``.
"""

__version__ = "0.1.0"
