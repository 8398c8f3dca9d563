"""Reference for the forget benchmark: the whole store rewritten without some users, by DuckDB's
`COPY (SELECT ... WHERE user_id NOT IN ...)` or Python polars' `sink_parquet`, over nudge's own
event segments, one output file per day folder as nudge keeps them. Prints the seconds taken and
the number of rows written.

usage: forget.py duckdb|polars EVENTS_DIR IDS_FILE OUT_DIR
"""

import os
import sys
import time

engine, events_dir, ids_file, out_dir = sys.argv[1:5]
with open(ids_file) as f:
    ids = [line.strip() for line in f if line.strip()]
days = sorted(d for d in os.listdir(events_dir) if d.startswith("day="))

started = time.time()
rows = 0
if engine == "duckdb":
    import duckdb

    duckdb.sql("SET enable_progress_bar = false")
    duckdb.sql("CREATE TABLE gone (user_id VARCHAR)")
    duckdb.executemany("INSERT INTO gone VALUES (?)", [[i] for i in ids])
    for day in days:
        os.makedirs(f"{out_dir}/{day}", exist_ok=True)
        source = f"read_parquet('{events_dir}/{day}/*.parquet', hive_partitioning = false)"
        duckdb.sql(
            f"""COPY (SELECT * FROM {source} WHERE user_id NOT IN (SELECT user_id FROM gone))
                TO '{out_dir}/{day}/kept.parquet' (FORMAT parquet, COMPRESSION lz4)"""
        )
        rows += duckdb.sql(f"SELECT count(*) FROM '{out_dir}/{day}/kept.parquet'").fetchall()[0][0]
else:
    import polars as pl

    for day in days:
        os.makedirs(f"{out_dir}/{day}", exist_ok=True)
        out = f"{out_dir}/{day}/kept.parquet"
        (
            pl.scan_parquet(f"{events_dir}/{day}/*.parquet", hive_partitioning=False)
            .filter(~pl.col("user_id").is_in(ids))
            .sink_parquet(out, compression="lz4")
        )
        rows += pl.scan_parquet(out).select(pl.len()).collect().item()
print(f"{time.time() - started:.3f} {rows}")
