"""One module per paper section: its presets (paper / cpu / smoke) and the paper's numbers.

A section module exports ``PRESETS`` (name -> Experiment), ``DEFAULT_PRESET``, ``make_dataset(exp)``
and ``headline(results) -> (metric name, value)``. ``SECTIONS`` maps CLI names to modules.
"""

from __future__ import annotations

from types import ModuleType

from experiments import copy as copy_section

SECTIONS: dict[str, ModuleType] = {"copy": copy_section}
