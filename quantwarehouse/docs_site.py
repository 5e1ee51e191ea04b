"""The dbt docs site (models, columns, sources, exposures and the lineage graph): generated with
`dbt docs generate` into dbt's target folder, then served from that folder on localhost.

`dbt docs serve` is not used: it may try to open a browser. The site is a JavaScript app that
loads manifest.json and catalog.json from its own origin, so the whole target folder is served.
"""

from __future__ import annotations

import errno
import os
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from quantwarehouse.dbt import DbtRunError, run_dbt
from quantwarehouse.lock import WriterLock
from quantwarehouse.paths import DBT_PROJECT_DIR
from quantwarehouse.runs import new_run_id

TARGET_PATH_ENV = "DBT_TARGET_PATH"
SITE_FILES = ("index.html", "manifest.json", "catalog.json")
# The overview page with the lineage graph open.
LINEAGE_FRAGMENT = "#!/overview?g_v=1"


def target_dir() -> Path:
    """dbt's target folder: `DBT_TARGET_PATH` (relative to the dbt project) or `target/`."""
    configured = os.environ.get(TARGET_PATH_ENV)
    if not configured:
        return DBT_PROJECT_DIR / "target"
    path = Path(configured)
    return path if path.is_absolute() else DBT_PROJECT_DIR / path


def generate(warehouse: Path) -> Path:
    """Run `dbt docs generate` on the warehouse; return the folder holding the site.

    dbt-duckdb opens the warehouse read-write to read its catalog, so this holds the writer lock:
    while a refresh runs it fails at once naming the writer, instead of with DuckDB's lock error.
    """
    with WriterLock(warehouse, new_run_id("docs"), "docs"):
        run_dbt(["docs", "generate"])
    folder = target_dir()
    missing = [name for name in SITE_FILES if not (folder / name).is_file()]
    if missing:
        raise DbtRunError(f"dbt docs generate left no {', '.join(missing)} in {folder}")
    return folder


class DocsRequestHandler(SimpleHTTPRequestHandler):
    """Static files of the site; never cached, so a reload after a new generate shows it."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the console shows the site's address, not every request."""


def bind(folder: Path, host: str, port: int) -> ThreadingHTTPServer:
    """A server for `folder` bound to host:port (0: any free port), not yet serving."""
    handler = partial(DocsRequestHandler, directory=str(folder))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"port {port} on {host} is already in use: choose another with --port "
                "(--port 0 picks a free one)"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def site_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
