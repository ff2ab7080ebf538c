-- Reading the outbox: events_since pages with resume tokens.
SELECT ab.create_flag('ff.ev_' || i) FROM generate_series(1, 5) i;
SELECT max(id) AS last_before FROM ab.events \gset
SELECT update_type, test_id, payload->'data'->>'flag' AS flag,
       resume_token = (event_id)::text AS token_is_id
FROM ab.events_since((:last_before - 5)::text, 3);
SELECT count(*) FROM ab.events_since(:last_before::text);
SELECT sqlstate_of($$SELECT * FROM ab.events_since('x')$$);
SELECT sqlstate_of($$SELECT * FROM ab.events_since(NULL)$$);
SELECT sqlstate_of($$SELECT * FROM ab.events_since('0', 0)$$);
