"""The registry of data sources `orchestrate.py ingest --source` accepts."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from ingest.loader import Source
from ingest.options import IngestOptions

# source name -> module whose `build(options)` returns the Source
SOURCE_MODULES: dict[str, str] = {
    "synthetic": "ingest.synthetic",
    "binance-vision": "ingest.binance_vision",
    "binance-api": "ingest.binance_api",
    "files": "ingest.files",
}


def build_source(name: str, options: IngestOptions) -> Source:
    if name not in SOURCE_MODULES:
        raise ValueError(
            f"--source: unknown source {name!r}; expected one of {', '.join(SOURCE_MODULES)}"
        )
    build: Callable[[IngestOptions], Source] = import_module(SOURCE_MODULES[name]).build
    return build(options)
