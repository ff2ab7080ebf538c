-- A test's new status ($1 test_id, $2 status, $3 reason or NULL to keep the last); a rolled-back
-- or completed test gets its end time.
UPDATE ab.tests SET status = $2, status_reason = coalesce($3, status_reason), updated_at = now(),
       ended_at = CASE WHEN $2 IN ('rolled_back', 'completed') THEN now() ELSE ended_at END
WHERE test_id = $1
