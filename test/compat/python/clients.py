"""Compatibility matrix, Python family (issue 23 item 1). Usage: python3 clients.py URL SCHEMA CLIENT.
Prints one JSON object: {"rows": [[...], ...] per way of reading customers, "denied": {sqlstate, message},
"after": value of a query run after the denial}. CLIENT: psycopg3, psycopg2 or sqlalchemy."""
import json
import sys

url, schema, client = sys.argv[1], sys.argv[2], sys.argv[3]
q = f"SELECT id, name, email, ssn FROM {schema}.customers ORDER BY id"
out = {"rows": [], "denied": None, "after": None}

if client == "psycopg3":
    import psycopg
    with psycopg.connect(url, autocommit=True) as c:
        out["rows"].append([list(r) for r in c.execute(q).fetchall()])
        out["rows"].append([list(r) for r in c.execute(q.replace("ORDER", "WHERE id > %s ORDER"), (0,)).fetchall()])
        with c.transaction():
            with c.cursor(name="compat_named") as cur:  # server-side cursor: DECLARE + FETCH
                cur.execute(q)
                out["rows"].append([list(r) for r in cur.fetchmany(1) + cur.fetchall()])
        with c.cursor() as cur:
            with cur.copy(f"COPY (SELECT id, name, email, ssn FROM {schema}.customers ORDER BY id) TO STDOUT") as cp:
                out["rows"].append([list(r) for r in cp.rows()])
        try:
            c.execute(f"DROP TABLE {schema}.victim")
        except psycopg.Error as e:
            out["denied"] = {"sqlstate": e.sqlstate, "message": str(e).strip()}
        out["after"] = c.execute("SELECT 1").fetchone()[0]
elif client == "psycopg2":
    import psycopg2
    c = psycopg2.connect(url)
    cur = c.cursor()
    cur.execute(q)
    out["rows"].append([list(r) for r in cur.fetchall()])
    named = c.cursor(name="compat_named")
    named.execute(q)
    out["rows"].append([list(r) for r in named.fetchall()])
    named.close()
    c.commit()
    try:
        cur.execute(f"DROP TABLE {schema}.victim")
    except psycopg2.Error as e:
        out["denied"] = {"sqlstate": e.pgcode, "message": e.pgerror.strip().removeprefix("ERROR:").strip()}
    c.rollback()
    cur.execute("SELECT 1")
    out["after"] = cur.fetchone()[0]
    c.close()
else:
    from sqlalchemy import MetaData, create_engine, inspect, select, text
    from sqlalchemy.exc import DBAPIError
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    md = MetaData()
    md.reflect(engine, schema=schema)
    cols = [c["name"] for c in inspect(engine).get_columns("customers", schema=schema)]
    assert cols == ["id", "name", "email", "ssn"], cols
    t = md.tables[f"{schema}.customers"]
    with engine.connect() as conn:
        out["rows"].append([list(r) for r in conn.execute(select(t).order_by(t.c.id)).all()])
        try:
            conn.execute(text(f"DROP TABLE {schema}.victim"))
        except DBAPIError as e:
            out["denied"] = {"sqlstate": e.orig.sqlstate, "message": str(e.orig).strip()}
        conn.rollback()
        out["after"] = conn.execute(text("SELECT 1")).scalar()
print(json.dumps(out, default=str))
