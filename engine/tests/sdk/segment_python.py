"""Sends events to nudge through Segment's Python SDK (segment-analytics-python, from PyPI,
unmodified): an identify, tracks and a screen for one user, a track for an anonymous one, then a
flush. Called by the engine's integration test `segment::*` with the URL to send to, the write
key and a prefix for the user ids; prints `flushed` once the SDK's queue is empty, and each
error the SDK reports on stderr."""

import sys
from datetime import datetime, timedelta, timezone

from segment.analytics import Client

url, key, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []
client = Client(
    write_key=key,
    host=url,
    gzip=True,
    max_retries=5,
    upload_interval=0.1,
    on_error=lambda error, batch: errors.append(error),
)
user = prefix + "-1"
at = datetime.now(timezone.utc) - timedelta(hours=2)
client.identify(
    user,
    {"plan": "gold", "city": "Hangzhou"},
    context={"timezone": "Asia/Shanghai"},
    timestamp=at,
    message_id=prefix + "-identify",
)
client.track(
    user,
    "Order Completed",
    {"order_id": "o-1", "total": 30},
    timestamp=at + timedelta(minutes=1),
    message_id=prefix + "-order",
)
client.track(
    user,
    "Coupon Applied",
    {"coupon": "WELCOME"},
    timestamp=at + timedelta(minutes=2),
    message_id=prefix + "-coupon",
)
client.screen(
    user,
    name="Home",
    properties={"from": "share"},
    timestamp=at + timedelta(minutes=3),
    message_id=prefix + "-screen",
)
client.track(
    anonymous_id=prefix + "-visitor",
    event="Application Opened",
    timestamp=at + timedelta(minutes=4),
    message_id=prefix + "-open",
)
client.flush()
client.join()
for error in errors:
    print(f"error: {error}", file=sys.stderr)
print("flushed" if not errors else "failed", flush=True)
