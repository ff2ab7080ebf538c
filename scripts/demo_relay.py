"""The demo's last act: pg_ab_relay between the database, Redis and a WebSocket client.
Run by scripts/demo.sh with the relay and a redis-server already started (see there)."""
import json
import os
import time

import jwt
import psycopg
import redis
from websockets.sync.client import connect

relay_url = os.environ["RELAY_WS_URL"]
r = redis.Redis(port=int(os.environ["REDIS_PORT"]), decode_responses=True)
db = psycopg.connect(autocommit=True)
test_id = "relay_demo"
db.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps({
    "test_name": "relay demo", "test_id": test_id, "champion_variant": "baseline_rule_based",
    "challenger_variant": "llm_v2", "rollout_stages": [10, 25, 50, 100]}),))
db.execute("SELECT ab.start_test(%s)", (test_id,))

# The API's L2 cache holds assignments of this test.
for u in range(1000):
    r.set(f"ab_test:assignments:{test_id}:user-{u}", json.dumps({"variant": "llm_v2"}))
print(f"Redis holds {len(list(r.scan_iter(f'ab_test:assignments:{test_id}:*')))} cached assignments of {test_id}")

pubsub = r.pubsub(ignore_subscribe_messages=True)
pubsub.subscribe(f"pg_ab:events:{test_id}")
token = jwt.encode({"test_ids": [test_id], "exp": int(time.time()) + 300}, os.environ["RELAY_SECRET"], algorithm="HS256")
with connect(relay_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
    ws.send(json.dumps({"action": "subscribe", "test_ids": [test_id]}))
    print("WebSocket <-", ws.recv(timeout=5))
    state = json.loads(ws.recv(timeout=5))
    print(f"WebSocket <- current state: status={state['data']['status']}, stage={state['data']['current_stage']}%")

    print(f"SQL: SELECT ab.progress_rollout('{test_id}'); SELECT ab.rollback_test('{test_id}', 'challenger errors')")
    db.execute("SELECT ab.progress_rollout(%s)", (test_id,))
    db.execute("SELECT ab.rollback_test(%s, 'challenger errors')", (test_id,))
    for _ in range(2):
        m = json.loads(ws.recv(timeout=5))
        print(f"WebSocket <- event {m['event_id']}: {m['update_type']} {json.dumps(m['data'])}")

deadline = time.time() + 5
published = []
while time.time() < deadline and len(published) < 2:
    m = pubsub.get_message(timeout=0.5)
    if m:
        published.append(json.loads(m["data"]))
for m in published:
    print(f"Redis pg_ab:events:{test_id} <- event {m['event_id']}: {m['update_type']}")
left = len(list(r.scan_iter(f"ab_test:assignments:{test_id}:*")))
print(f"Redis now holds {left} cached assignments of {test_id} (the rollback removed them)")
lag_sql = "SELECT relay_name, last_event_id, pending_events FROM ab.relay_lag()"
deadline = time.time() + 3
while db.execute(lag_sql).fetchone()[2] > 0 and time.time() < deadline:
    time.sleep(0.1)  # the relay stores its cursor at most every 200 ms
name, cursor, pending = db.execute(lag_sql).fetchone()
print(f"ab.relay_lag(): relay '{name}' has delivered up to event {cursor}, {pending} pending")
