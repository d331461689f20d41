"""The PG-19 demo: Jane Austen's six novels in the PG-19 layout (``repro data demo pg19``).

The novels come from Debian's ``r-cran-janeaustenr`` package (Project Gutenberg texts with the
licence header removed, the same cleaning as PG-19; texts public domain, package MIT), read
without R from the package's R data file (``repro/data/formats/debian.py``,
``repro/data/formats/rdata.py``) and written as ``metadata.csv`` + ``<split>/<book id>.txt``: four
novels train, *Persuasion* validation, *Northanger Abbey* test. The ``.deb`` is fetched once at
setup (``make setup`` runs ``scripts/fetch_demo_sources.sh``), never at run time.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

from repro.data.formats.debian import deb_members
from repro.data.formats.rdata import RValue, read_lazyload_db
from repro.data.source import SPLITS, DataError

DEMO_ENV = "REPRO_DEMO_SOURCES"
DEMO_DEB_GLOB = "r-cran-janeaustenr_*.deb"
FETCH_COMMAND = "make setup (or: bash scripts/fetch_demo_sources.sh)"
_RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
INSTALLED_RDATA = Path("/") / _RDATA  # where `apt-get install r-cran-janeaustenr` puts it

# janeaustenr object -> (Project Gutenberg ebook number = PG-19 book id, title, year on the title page)
AUSTEN_BOOKS = {
    "sensesensibility": (161, "Sense and Sensibility", 1811),
    "prideprejudice": (1342, "Pride and Prejudice", 1813),
    "mansfieldpark": (141, "Mansfield Park", 1814),
    "emma": (158, "Emma", 1815),
    "northangerabbey": (121, "Northanger Abbey", 1818),
    "persuasion": (105, "Persuasion", 1818),
}
DEMO_SPLITS = {"validation": ("persuasion",), "test": ("northangerabbey",)}


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def demo_source_dirs() -> list[Path]:
    """Where ``scripts/fetch_demo_sources.sh`` puts the demo's Debian packages, in search order:
    ``$REPRO_DEMO_SOURCES``, the running environment's ``share/repro-demo`` (``.venv`` after
    ``make setup``), and ``.venv/share/repro-demo`` of this checkout."""
    dirs = [Path(os.environ[DEMO_ENV])] if os.environ.get(DEMO_ENV) else []
    dirs += [Path(sys.prefix) / "share" / "repro-demo", _repo_root() / ".venv" / "share" / "repro-demo"]
    return list(dict.fromkeys(dirs))


def find_austen_deb() -> Path | None:
    """The newest ``r-cran-janeaustenr_*.deb`` in ``demo_source_dirs()``, or None."""
    for d in demo_source_dirs():
        debs = sorted(d.glob(DEMO_DEB_GLOB)) if d.is_dir() else []
        if debs:
            return debs[-1]
    return None


def austen_novels(deb: Path | None = None) -> dict[str, list[str]]:
    """The six novels as lists of lines (janeaustenr object name -> lines; the first line is the
    title), from the ``.deb`` (default: ``find_austen_deb()``) or an installed R package."""
    if deb is None:
        deb = find_austen_deb()
    if deb is not None:
        files = deb_members(deb, {_RDATA + ".rdx", _RDATA + ".rdb"})
        rdx, rdb, label = files[_RDATA + ".rdx"], files[_RDATA + ".rdb"], f"{deb}:{_RDATA}"
    elif INSTALLED_RDATA.with_suffix(".rdb").is_file():
        rdx = INSTALLED_RDATA.with_suffix(".rdx").read_bytes()
        rdb, label = INSTALLED_RDATA.with_suffix(".rdb").read_bytes(), str(INSTALLED_RDATA)
    else:
        where = ", ".join(str(d) for d in demo_source_dirs())
        raise DataError(
            f"the PG-19 demo needs Debian's r-cran-janeaustenr package ({DEMO_DEB_GLOB} in one of: {where}); "
            f"run {FETCH_COMMAND}"
        )
    objects = read_lazyload_db(rdx, rdb, label)
    books = {}
    for name in AUSTEN_BOOKS:
        v = objects.get(name)
        if not isinstance(v, RValue) or v.kind != "character" or not v.values:
            raise DataError(f"{label}: no character vector '{name}'")
        books[name] = ["" if line is None else line for line in v.values]
    return books


def write_demo(out: Path) -> Path:
    """Austen's novels in the PG-19 layout under ``out`` (metadata.csv, train/, validation/,
    test/); returns ``out``. DataError naming the setup command when the .deb is absent."""
    out = Path(out)
    books = austen_novels()
    where = {name: split for split, names in DEMO_SPLITS.items() for name in names}
    rows = []
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    for name, lines in books.items():
        book_id, title, year = AUSTEN_BOOKS[name]
        split = where.get(name, "train")
        (out / split / f"{book_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows.append((book_id, [str(book_id), title, str(year), f"https://www.gutenberg.org/ebooks/{book_id}"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for _, row in sorted(rows):
        w.writerow(row)
    (out / "metadata.csv").write_text(buf.getvalue(), encoding="utf-8")
    return out
