-- Scheduled changes (README, "Schedules"): a start, pause, resume, progression, completion or
-- rollback of a test, or a flag's switch or percentage, due at a time and applied exactly once by
-- the periodic job (ab.apply_due_schedules(): the relay calls it every --schedule-seconds, or
-- pg_cron does). A rule's own validity window ({"valid": {"from", "until"}}) needs no job: it is
-- judged at every evaluation against the transaction's time.

CREATE TABLE ab.schedules (
    id           bigserial PRIMARY KEY,
    run_at       timestamptz NOT NULL,
    -- {"do": <function>, "test_id" | "flag": ..., and the function's other arguments}
    action       jsonb NOT NULL CHECK (jsonb_typeof(action) = 'object'),
    created_by   text NOT NULL DEFAULT current_user,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once, by the run that applied it: {"ok": true, "result": …} or {"ok": false,
    -- "sqlstate": …, "message": …} (a failed action is applied — and reported — once too).
    applied_at   timestamptz,
    outcome      jsonb,
    cancelled_at timestamptz,
    CHECK (applied_at IS NULL OR cancelled_at IS NULL)
);
CREATE INDEX schedules_due ON ab.schedules (run_at, id) WHERE applied_at IS NULL AND cancelled_at IS NULL;

CREATE TRIGGER schedules_audit AFTER INSERT OR UPDATE OR DELETE ON ab.schedules
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();

SELECT pg_catalog.pg_extension_config_dump('ab.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('ab.schedules_id_seq', '');

-- The statement an action runs, checked: a known function and its arguments, quoted. Raises
-- 22023 (unknown "do", a missing or mistyped argument, an unknown key) naming what to fix.
CREATE FUNCTION ab._schedule_statement(action jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f text := action ->> 'do';
    known text[];
    k text;
BEGIN
    IF jsonb_typeof(action) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'action must be a JSON object, got %', action
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"do": "start_test", "test_id": "ranker_v2"}';
    END IF;
    known := CASE f
        WHEN 'start_test' THEN '{do,test_id}'
        WHEN 'resume_test' THEN '{do,test_id}'
        WHEN 'progress_rollout' THEN '{do,test_id}'
        WHEN 'pause_test' THEN '{do,test_id,reason}'
        WHEN 'rollback_test' THEN '{do,test_id,reason}'
        WHEN 'complete_test' THEN '{do,test_id,winner}'
        WHEN 'enable_flag' THEN '{do,flag}'
        WHEN 'disable_flag' THEN '{do,flag}'
        WHEN 'update_rollout_percentage' THEN '{do,flag,rollout_percentage}'
    END::text[];
    IF known IS NULL THEN
        RAISE EXCEPTION 'action.do: unknown action %', coalesce((action -> 'do')::text, 'nothing')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'known: start_test, pause_test, resume_test, progress_rollout, complete_test, rollback_test, enable_flag, disable_flag, update_rollout_percentage';
    END IF;
    FOR k IN SELECT jsonb_object_keys(action) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'action: unknown key "%" for %', k, f
                USING ERRCODE = 'invalid_parameter_value', HINT = format('known: %s', array_to_string(known, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY known[2:] LOOP
        IF k = 'rollout_percentage' THEN
            IF jsonb_typeof(action -> k) IS DISTINCT FROM 'number' OR (action ->> k)::numeric NOT BETWEEN 0 AND 100
               OR (action ->> k)::numeric % 1 <> 0 THEN
                RAISE EXCEPTION 'action.rollout_percentage must be a whole number from 0 to 100, got %', coalesce((action -> k)::text, 'nothing')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k IN ('test_id', 'flag') AND jsonb_typeof(action -> k) IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'action.% must be a string, got %', k, coalesce((action -> k)::text, 'nothing')
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF action ? k AND jsonb_typeof(action -> k) <> 'string' THEN
            RAISE EXCEPTION 'action.% must be a string, got %', k, action -> k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN CASE
        WHEN f IN ('start_test', 'resume_test', 'progress_rollout') THEN format('SELECT ab.%I(%L)', f, action ->> 'test_id')
        WHEN f IN ('pause_test', 'rollback_test') THEN format('SELECT ab.%I(%L, %L)', f, action ->> 'test_id', coalesce(action ->> 'reason', 'scheduled'))
        WHEN f = 'complete_test' THEN format('SELECT ab.complete_test(%L, %L)', action ->> 'test_id', action ->> 'winner')
        WHEN f IN ('enable_flag', 'disable_flag') THEN format('SELECT ab.%I(%L)', f, action ->> 'flag')
        ELSE format('SELECT ab.update_rollout_percentage(%L, %s)', action ->> 'flag', (action ->> 'rollout_percentage')::numeric::int)
    END;
END $$;

-- An event about a schedule: a test's (ab_test_update) or a flag's (flag_update).
CREATE FUNCTION ab._schedule_event(schedule_id bigint, update_type text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ab.require_primary('ab._schedule_event');
    INSERT INTO ab.events (test_id, type, payload)
    SELECT s.action ->> 'test_id', update_type, jsonb_build_object(
        'type', CASE WHEN s.action ? 'test_id' THEN 'ab_test_update' ELSE 'flag_update' END,
        'test_id', s.action ->> 'test_id',
        'update_type', update_type,
        'data', jsonb_build_object('schedule_id', s.id, 'run_at', s.run_at, 'action', s.action, 'outcome', s.outcome),
        'timestamp', extract(epoch FROM now()))
    FROM ab.schedules s WHERE s.id = schedule_id;
END $$;

-- Schedules an action at run_at; returns its id. Errors: a bad action (22023), an unknown test
-- or flag (42704), a NULL time (22004).
CREATE FUNCTION ab.schedule(run_at timestamptz, action jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    s ab.schedules;
BEGIN
    PERFORM ab.require_primary('ab.schedule');
    IF run_at IS NULL OR action IS NULL THEN
        RAISE EXCEPTION 'run_at and action must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT isfinite(run_at) THEN
        RAISE EXCEPTION 'run_at must be a finite time, got %', run_at USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ab._schedule_statement(action);
    IF action ? 'test_id' AND NOT EXISTS (SELECT 1 FROM ab.tests t WHERE t.test_id = action ->> 'test_id') THEN
        RAISE EXCEPTION 'test "%" does not exist', action ->> 'test_id'
            USING ERRCODE = 'undefined_object', HINT = 'list tests with SELECT test_id, status FROM ab.tests';
    END IF;
    IF action ? 'winner' AND NOT EXISTS (SELECT 1 FROM ab.variants v
                                         WHERE v.test_id = action ->> 'test_id' AND v.variant = action ->> 'winner') THEN
        RAISE EXCEPTION 'action.winner: "%" is not a variant of test "%"', action ->> 'winner', action ->> 'test_id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF action ? 'flag' AND NOT EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = action ->> 'flag') THEN
        RAISE EXCEPTION 'flag "%" does not exist', action ->> 'flag'
            USING ERRCODE = 'undefined_object', HINT = 'list flags with SELECT name FROM ab.flags';
    END IF;
    INSERT INTO ab.schedules (run_at, action) VALUES (schedule.run_at, schedule.action) RETURNING * INTO s;
    PERFORM ab._schedule_event(s.id, 'schedule_created');
    RETURN s.id;
END $$;

-- Cancels a schedule not yet applied; whether it was pending (false: already applied or
-- cancelled). Errors: NULL (22004), an unknown id (42704).
CREATE FUNCTION ab.cancel_schedule(schedule_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    s ab.schedules;
BEGIN
    PERFORM ab.require_primary('ab.cancel_schedule');
    IF schedule_id IS NULL THEN
        RAISE EXCEPTION 'schedule_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ab.schedules WHERE id = schedule_id) THEN
        RAISE EXCEPTION 'schedule % does not exist', schedule_id
            USING ERRCODE = 'undefined_object', HINT = 'list them with SELECT id, run_at, action FROM ab.schedules';
    END IF;
    UPDATE ab.schedules SET cancelled_at = now()
    WHERE id = schedule_id AND applied_at IS NULL AND cancelled_at IS NULL
    RETURNING * INTO s;
    IF s.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM ab._schedule_event(s.id, 'schedule_cancelled');
    RETURN true;
END $$;

-- Applies every schedule due at the transaction's time, oldest first, each exactly once: one
-- run at a time (a transaction-level advisory lock), rows locked and marked applied in this
-- transaction. Run it in READ COMMITTED (the relay and pg_cron do). A failing action (a test no longer active, say) is rolled back alone, recorded
-- in outcome and reported; the rest go on. A transient failure (40xxx, 55P03, 57014) is rolled
-- back and left due for the next run. Emits schedule_applied per schedule; returns
-- [{"id", "action", "outcome"}]. Runs as the extension's owner, so the relay's role applies
-- what an admin scheduled without the admin's rights (only the actions above can run).
CREATE FUNCTION ab.apply_due_schedules() RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s ab.schedules;
    result jsonb;
    verdict jsonb;
    state text;
    msg text;
    applied jsonb := '[]';
BEGIN
    PERFORM ab.require_primary('ab.apply_due_schedules');
    -- One run at a time, so changes to one test or flag are applied in run_at order (two runs
    -- splitting the rows could commit a later change before an earlier one). A concurrent call
    -- returns at once with nothing applied.
    IF NOT pg_try_advisory_xact_lock(hashtext('pg_ab.apply_due_schedules')) THEN
        RETURN '[]';
    END IF;
    FOR s IN SELECT * FROM ab.schedules
             WHERE applied_at IS NULL AND cancelled_at IS NULL AND run_at <= now()
             ORDER BY run_at, id
             FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            EXECUTE ab._schedule_statement(s.action) INTO result;
            verdict := jsonb_build_object('ok', true, 'result', result);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            -- A transient failure (serialization, deadlock, lock or statement timeout) is left
            -- due: the next run tries again.
            IF state LIKE '40%' OR state IN ('55P03', '57014') THEN
                CONTINUE;
            END IF;
            verdict := jsonb_build_object('ok', false, 'sqlstate', state, 'message', msg);
        END;
        UPDATE ab.schedules SET applied_at = now(), outcome = verdict
        WHERE id = s.id RETURNING * INTO s;
        PERFORM ab._schedule_event(s.id, 'schedule_applied');
        applied := applied || jsonb_build_object('id', s.id, 'action', s.action, 'outcome', verdict);
    END LOOP;
    RETURN applied;
END $$;
