"""`orchestrate.py docs`: generate the dbt docs site (lineage graph included) and serve it."""

from __future__ import annotations

import argparse
import logging
import sys
from http.server import ThreadingHTTPServer

from quantwarehouse import docs_site
from quantwarehouse.cli import CliError
from quantwarehouse.dbt import DbtRunError
from quantwarehouse.logs import log_summary, setup_logging
from quantwarehouse.paths import warehouse_path

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value!r}")
    return port


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "docs",
        help="generate the dbt docs site (models, columns, lineage) and serve it on localhost",
        description=(
            "Run `dbt docs generate` on the warehouse (into dbt's target folder: DBT_TARGET_PATH "
            "or dbt_project/target), then serve that folder over HTTP and print its address; "
            "the lineage graph is at <address>#!/overview?g_v=1. Ctrl-C stops the server. "
            "Generating holds the writer lock (dbt opens the warehouse read-write), so it fails "
            "at once while a refresh runs."
        ),
    )
    parser.add_argument(
        "--port",
        type=parse_port,
        default=DEFAULT_PORT,
        help=f"port to serve on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}, this machine only)",
    )
    parser.add_argument(
        "--no-serve", action="store_true", help="generate the site only, do not serve it"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    warehouse = warehouse_path()
    if not warehouse.exists():
        raise FileNotFoundError(
            f"no warehouse at {warehouse}: load and build it first (orchestrate.py ingest, then "
            "daily-refresh) so the docs can show its tables and columns"
        )
    setup_logging("docs")
    # Listen before generating, so a busy port fails in a second rather than after dbt.
    server = None if args.no_serve else _bind(args.host, args.port)
    try:
        log.info("dbt docs generate on %s ...", warehouse)
        try:
            folder = docs_site.generate(warehouse)
        except DbtRunError as exc:
            log.error("error: %s", exc)
            print(f"error: {exc}", file=sys.stderr)
            return 1
        log.info("docs site generated in %s", folder)
        if server is None:
            log_summary([f"docs: generated {folder / 'index.html'} (not served: --no-serve)"])
            return 0
        _serve_until_interrupted(server)
    finally:
        if server is not None:
            server.server_close()
    return 0


def _bind(host: str, port: int) -> ThreadingHTTPServer:
    try:
        return docs_site.bind(docs_site.target_dir(), host, port)
    except OSError as exc:
        raise CliError(str(exc)) from None


def _serve_until_interrupted(server: ThreadingHTTPServer) -> None:
    url = docs_site.site_url(server)
    log.info("serving the docs at %s (lineage graph: %s%s)", url, url, docs_site.LINEAGE_FRAGMENT)
    log.info("press Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log_summary([f"docs: server at {url} stopped"])
