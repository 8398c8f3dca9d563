"""Reference for the windows benchmark: the per-user, local hour-of-week histogram (events
weighted by kind and decayed by age) computed by DuckDB SQL or by Python polars over nudge's own
event segments. Prints the seconds taken and the number of (user, hour) rows.

usage: histogram.py duckdb|polars EVENTS_DIR ZONES_CSV DEFAULT_TZ FROM_MS AS_OF_MS HALF_LIFE_DAYS WEIGHTS_JSON DEFAULT_WEIGHT
"""

import json
import sys
import time

engine, events_dir, zones_csv, default_tz = sys.argv[1:5]
from_ms, as_of_ms = int(sys.argv[5]), int(sys.argv[6])
half_life_ms = float(sys.argv[7]) * 86_400_000
weights = json.loads(sys.argv[8])
default_weight = float(sys.argv[9])
files = f"{events_dir}/day=*/*.parquet"

started = time.time()
if engine == "duckdb":
    import duckdb

    duckdb.sql("SET enable_progress_bar = false")
    cases = " ".join(f"WHEN '{name}' THEN {weight}" for name, weight in weights.items())
    rows = duckdb.sql(
        f"""
        WITH ev AS (
            SELECT user_id, ts, CASE event {cases} ELSE {default_weight} END AS w
            FROM read_parquet('{files}', hive_partitioning = false)
            WHERE ts > {from_ms} AND ts <= {as_of_ms}
        ),
        zones AS (SELECT user_id, tz FROM read_csv('{zones_csv}', header = true)),
        local AS (
            SELECT ev.user_id, ev.ts, ev.w,
                   timezone(coalesce(zones.tz, '{default_tz}'), to_timestamp(ev.ts / 1000)) AS l
            FROM ev LEFT JOIN zones USING (user_id)
            WHERE ev.w > 0
        )
        SELECT user_id, (isodow(l) - 1) * 24 + hour(l) AS how,
               sum(w * pow(0.5, ({as_of_ms} - ts) / {half_life_ms})) AS weight
        FROM local GROUP BY 1, 2
        """
    ).fetchall()
    count = len(rows)
else:
    import polars as pl

    zones = pl.read_csv(zones_csv)
    ev = (
        pl.scan_parquet(files, hive_partitioning=False)
        .filter((pl.col("ts") > from_ms) & (pl.col("ts") <= as_of_ms))
        .with_columns(
            w=pl.col("event").replace_strict(
                list(weights.keys()), list(weights.values()), default=default_weight, return_dtype=pl.Float64
            )
        )
        .filter(pl.col("w") > 0)
        .join(zones.lazy(), on="user_id", how="left")
        .with_columns(pl.col("tz").fill_null(default_tz))
    )
    parts = []
    for tz in sorted(set(zones["tz"].drop_nulls().to_list()) | {default_tz}):
        local = pl.from_epoch(pl.col("ts"), time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
        parts.append(
            ev.filter(pl.col("tz") == tz).select(
                "user_id",
                ((local.dt.weekday() - 1) * 24 + local.dt.hour()).cast(pl.Int32).alias("how"),
                (pl.col("w") * pl.lit(0.5).pow((as_of_ms - pl.col("ts")) / half_life_ms)).alias("weight"),
            )
        )
    out = pl.concat(parts).group_by("user_id", "how").agg(pl.col("weight").sum()).collect()
    count = out.height
print(f"{time.time() - started:.3f} {count}")
