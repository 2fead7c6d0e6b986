"""Importers: turn public GPU profiles into rows of the profile schema (see ../schema.py).

One module per source format, named <source>_importer.py; importer_registry.py walks a data
root (shared/data/profiles) and dispatches each file to its importer.
"""

from revati.predictor.importers.importer_registry import build_profiles, import_all

__all__ = ["build_profiles", "import_all"]
