"""One file per paper section. Each defines a :class:`repro.section.Section` subclass and an
instance of it named ``SECTION``; this package finds them all (a new section is a new file here,
plus its raw-data module in ``repro/data/``: nothing else to register).

``SECTIONS`` maps CLI names (``repro run <name>``) to the section objects.
"""

from __future__ import annotations

import importlib
import pkgutil

from repro.section import Section


def _discover() -> dict[str, Section]:
    found: dict[str, Section] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        sec = getattr(mod, "SECTION", None)
        if isinstance(sec, Section):
            if sec.name in found:
                raise RuntimeError(f"two sections are named '{sec.name}'")
            found[sec.name] = sec
    return found


SECTIONS: dict[str, Section] = _discover()
