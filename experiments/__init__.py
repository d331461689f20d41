"""One module per paper section: its presets (paper / cpu / smoke) and the paper's numbers.

A section module exports ``PRESETS`` (name -> Experiment), ``DEFAULT_PRESET``, ``make_dataset(exp)``
and ``headline(results) -> (metric name, value)``. ``SECTIONS`` maps CLI names to modules.

Optional hooks for ``repro eval`` / ``repro sample`` (``experiments/copy.py`` has all of them):
``default_protocol(exp) -> str`` (the evaluation protocol used when none is given, see
``repro/eval/protocols.py``); ``SAMPLE_DEFAULTS`` (``SampleConfig`` fields, e.g. greedy);
``sample_prompts(exp, num, prompt) -> (prompts, num_new, expected)``; and
``write_samples(exp, prompts, generated, expected, outdir, settings) -> summary dict``, which
writes what a person wants to see under ``<workdir>/samples/`` (copy: text + JSON with a mirror
check; images would write a PNG grid, music MIDI files, text sections plain text).
"""

from __future__ import annotations

from types import ModuleType

from experiments import copy as copy_section

SECTIONS: dict[str, ModuleType] = {"copy": copy_section}
