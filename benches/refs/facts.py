"""Reference for the rules benchmark: the group-bys behind a rule's facts, computed by DuckDB SQL
or by Python polars over nudge's own event segments: every user up to AS_OF, and for the rule's
events per (user, event) the latest time with its props and the times inside the rule's window.
It stops at the group-bys: nudge's figure also reads the users' SQL state and builds a struct a
user. Prints the seconds taken and the number of (user, event) rows.

usage: facts.py duckdb|polars EVENTS_DIR EVENTS_JSON FROM_MS AS_OF_MS
"""

import json
import sys
import time

engine, events_dir = sys.argv[1:3]
names = json.loads(sys.argv[3])
from_ms, as_of_ms = int(sys.argv[4]), int(sys.argv[5])
files = f"{events_dir}/day=*/*.parquet"

started = time.time()
if engine == "duckdb":
    import duckdb

    duckdb.sql("SET enable_progress_bar = false")
    source = f"read_parquet('{files}', hive_partitioning = false)"
    wanted = ", ".join(f"'{name}'" for name in names)
    users = duckdb.sql(f"SELECT count(DISTINCT user_id) FROM {source} WHERE ts <= {as_of_ms}").fetchall()
    latest = duckdb.sql(
        f"""SELECT user_id, event, max(ts) AS last_ms, arg_max(props, ts) AS last_props
            FROM {source} WHERE ts <= {as_of_ms} AND event IN ({wanted}) GROUP BY 1, 2"""
    ).fetchall()
    windowed = duckdb.sql(
        f"""SELECT user_id, event, list(ts) FROM {source}
            WHERE ts > {from_ms} AND ts <= {as_of_ms} AND event IN ({wanted}) GROUP BY 1, 2"""
    ).fetchall()
    count = len(latest)
else:
    import polars as pl

    ev = pl.scan_parquet(files, hive_partitioning=False).filter(pl.col("ts") <= as_of_ms)
    chosen = ev.filter(pl.col("event").is_in(names))
    users = ev.select(pl.col("user_id").n_unique())
    latest = chosen.group_by("user_id", "event").agg(
        pl.col("ts").max().alias("last_ms"),
        pl.col("props").get(pl.col("ts").arg_max()).alias("last_props"),
    )
    windowed = chosen.filter(pl.col("ts") > from_ms).group_by("user_id", "event").agg(pl.col("ts"))
    users, latest, windowed = pl.collect_all([users, latest, windowed])
    count = latest.height
print(f"{time.time() - started:.3f} {count}")
