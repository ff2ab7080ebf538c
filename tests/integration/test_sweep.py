"""The SQL-level sweep: every function of pg_ab called with hostile values in each argument
(NULL, empty and 1 MiB strings, unknown ids, NaN and ±Infinity, -0, 1e400, huge numbers,
10,000-element arrays, JSON nested 1,000 levels deep, invalid escapes). Each call answers or
fails with a SQLSTATE that the README's "Errors" section lists, never XX000; the backend
survives; and nothing a failed call did is left behind."""
import os
import re

import psycopg
import pytest

from operate import ROOT, create_database, drop_database, fill, table_rows, user_tables

MIB = "x" * (1 << 20)
DEEP = "[" * 1000 + "]" * 1000
TEN_K = "{" + ",".join(f"u{i}" for i in range(10_000)) + "}"

# Hostile values per argument type, as SQL literals.
HOSTILE = {
    "text": ["NULL", "''", f"'{MIB}'", "'no_such_thing'", "'😀ü\u200b'", "'t_active'' OR 1=1 --'"],
    "jsonb": ["NULL", "'{}'", "'[]'", "'null'", "'1e400'", "'[{\"text\": \"x\", \"type\": \"person\", \"confidence\": 1e400}]'",
              f"'{DEEP}'", "'{\"latency_ms\": -0}'", "'{\"latency_ms\": 123456789012345678901234567890}'",
              "'[{\"text\": \"\", \"type\": \"\", \"confidence\": 0}]'"],
    "double precision": ["NULL", "'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "1e308", "5e-324"],
    "integer": ["NULL", "0", "-1", "2147483647", "-2147483648"],
    "bigint": ["NULL", "-1", "9223372036854775807"],
    "boolean": ["NULL", "true"],
    "text[]": ["NULL", "'{}'", f"'{TEN_K}'", "'{NULL}'", "'{\"\"}'"],
    "bigint[]": ["NULL", "'{}'", "'{-1,9223372036854775807}'"],
    "double precision[]": ["NULL", "'{}'", "'{NaN,Infinity,-0}'"],
    "ltree": ["NULL", "'world'", "'a.b.c.d.e.f.g.h'", "'" + ".".join(["x"] * 1000) + "'"],
    "ltree[]": ["NULL", "'{}'", "'{" + ",".join(["world.europe"] * 10_000) + "}'"],
    "timestamp with time zone": ["NULL", "'infinity'", "'-infinity'", "'4000-01-01'"],
    "interval": ["NULL", "'-1 day'", "'1000000 years'"],
    "regclass": ["'ab.config_signal'", "'pg_class'"],
    "oid": ["0", "4294967295", "'ab.config_signal'::regclass::oid"],
}
# A benign value per type, for the arguments not under test.
BENIGN = {"text": "'t_active'", "jsonb": "'{}'", "double precision": "0.5", "integer": "10", "bigint": "10",
          "boolean": "true", "text[]": "'{}'", "bigint[]": "'{}'", "double precision[]": "'{}'", "ltree": "'world'",
          "ltree[]": "'{world}'", "timestamp with time zone": "now()", "interval": "'1 day'",
          "regclass": "'ab.config_signal'", "oid": "'ab.config_signal'::regclass::oid"}


def documented_sqlstates():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    errors = text[text.index("### Errors"):]
    errors = errors[:errors.index("\n## ")]
    return set(re.findall(r"^\| ([0-9A-Z]{5}) `", errors, re.M))


@pytest.fixture(scope="module")
def swept_db():
    name = "sweep_db"
    create_database(name)
    with psycopg.connect(dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION ltree")
        c.execute("CREATE EXTENSION pg_ab")
        fill(c)
    yield name
    drop_database(name)


def functions(conn):
    return conn.execute(
        """SELECT p.proname, p.oid::regprocedure::text,
                  ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
           FROM pg_proc p WHERE p.pronamespace = 'ab'::regnamespace AND p.prorettype <> 'trigger'::regtype
             AND p.prokind = 'f' ORDER BY 2""").fetchall()


def calls(conn):
    for name, signature, types in functions(conn):
        if not types:
            yield name, f"SELECT ab.{name}()"
            continue
        missing = [t for t in types if t not in HOSTILE]
        assert not missing, f"{signature}: no hostile values for {missing}"
        for i, t in enumerate(types):
            for value in HOSTILE[t]:
                args = [BENIGN[u] for u in types]
                args[i] = f"{value}::{t}"
                yield name, f"SELECT ab.{name}({', '.join(args)})"


def test_every_function_answers_or_fails_with_a_documented_sqlstate(swept_db):
    documented = documented_sqlstates()
    assert {"22004", "22023", "22003", "42704", "25006", "42501"} <= documented
    seen = {}
    with psycopg.connect(dbname=swept_db) as c:
        c.execute("SET statement_timeout = '20s'")
        c.commit()
        before = {t: table_rows(c, t) for t in user_tables(c)}
        c.commit()
        count = 0
        wrong = []
        for name, sql in calls(c):
            count += 1
            try:
                c.execute(sql).fetchall()
                outcome = "ok"
            except psycopg.Error as e:
                assert not c.broken, f"the backend did not survive {sql[:200]}: {e}"
                outcome = e.sqlstate
                if outcome == "XX000" or outcome not in documented:
                    wrong.append(f"{outcome} from {sql[:200]}: {str(e)[:200]}")
            finally:
                c.rollback()
            assert c.execute("SELECT 1").fetchone() == (1,)
            c.rollback()
            seen.setdefault(outcome, name)
        assert count > 500
        assert not wrong, "\n".join(wrong)
        after = {t: table_rows(c, t) for t in user_tables(c)}
        assert after == before
