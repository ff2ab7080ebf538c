"""Makes src/pg_ab/_sync.py (the synchronous Client) from src/pg_ab/_client.py (AsyncClient):
the same methods without async/await, as psycopg makes its sync code from its async code. Run
it after editing _client.py; the test suite checks that _sync.py is what it makes.

    python tools/gen_sync.py           # writes _sync.py
    python tools/gen_sync.py --check   # exits 1 when _sync.py is stale"""
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent.parent / "src" / "pg_ab"

REPLACEMENTS = [
    (r"\bAsyncExecutor\b", "Executor"),
    (r"\basync_executor\b", "sync_executor"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bpsycopg\.AsyncConnection\b", "psycopg.Connection"),
    (r"\bAsyncConnectionPool\b", "ConnectionPool"),
    (r"\bAsyncConnection\b", "Connection"),
    (r"\basync def __aenter__", "def __enter__"),
    (r"\basync def __aexit__", "def __exit__"),
    (r"\basync def ", "def "),
    (r"\bawait ", ""),
    (r"\basyncio code\b", "synchronous code"),
    (r".*asyncpg_pool.*\n", ""),
]


def generate() -> str:
    source = (HERE / "_client.py").read_text(encoding="utf-8")
    head, body = source.split('"""', 2)[1], source.split('"""', 2)[2]
    out = body
    for pattern, replacement in REPLACEMENTS:
        out = re.sub(pattern, replacement, out)
    doc = ('"""The synchronous client, made by tools/gen_sync.py from _client.py (the asynchronous '
           'one): do not edit.\n\n' + head.split("\n\n", 1)[1] + '"""')
    return doc + out


def main() -> int:
    text = generate()
    target = HERE / "_sync.py"
    if "--check" in sys.argv:
        if target.read_text(encoding="utf-8") != text:
            print("src/pg_ab/_sync.py is stale: run python tools/gen_sync.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
