"""DDL of the raw layer: append-only klines with revisions, symbols, batches, files and rejects."""

from __future__ import annotations

import duckdb

RAW_DDL = """
create schema if not exists raw;

create sequence if not exists raw.load_batch_seq start 1;

create table if not exists raw.load_batches (
    batch_id bigint primary key,
    source varchar not null,
    parameters json,
    started_at timestamp not null,
    finished_at timestamp,
    status varchar not null,
    files_read bigint default 0,
    files_skipped bigint default 0,
    files_rejected bigint default 0,
    rows_read bigint default 0,
    rows_inserted bigint default 0,
    rows_revised bigint default 0,
    rows_unchanged bigint default 0,
    rows_rejected bigint default 0,
    symbols_skipped_fresh bigint default 0,
    error varchar
);

create table if not exists raw.klines (
    symbol varchar not null,
    interval varchar not null,
    open_time timestamp not null,
    close_time timestamp not null,
    open double not null,
    high double not null,
    low double not null,
    close double not null,
    volume double not null,
    quote_volume double,
    trade_count bigint,
    taker_buy_base_volume double,
    taker_buy_quote_volume double,
    revision integer not null,
    value_hash ubigint not null,
    source varchar not null,
    batch_id bigint not null,
    loaded_at timestamp not null,
    source_file varchar,
    source_checksum varchar
);

create table if not exists raw.symbols (
    symbol varchar not null,
    exchange varchar not null,
    status varchar,
    base_asset varchar,
    quote_asset varchar,
    tick_size double,
    step_size double,
    min_qty double,
    listed_at timestamp,
    delisted_at timestamp,
    revision integer not null,
    value_hash ubigint not null,
    source varchar not null,
    batch_id bigint not null,
    loaded_at timestamp not null
);

create table if not exists raw.loaded_files (
    source varchar not null,
    file_key varchar not null,
    checksum varchar,
    status varchar not null,
    reason varchar,
    rows_read bigint,
    batch_id bigint not null,
    loaded_at timestamp not null
);

create table if not exists raw.symbol_loads (
    source varchar not null,
    symbol varchar not null,
    interval varchar not null,
    rows_read bigint not null,
    batch_id bigint not null,
    loaded_at timestamp not null
);

create table if not exists raw.rejects (
    batch_id bigint not null,
    source varchar not null,
    source_file varchar,
    source_row bigint,
    symbol varchar,
    interval varchar,
    raw_row varchar,
    reason varchar not null,
    rejected_at timestamp not null
);
"""


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RAW_DDL)
