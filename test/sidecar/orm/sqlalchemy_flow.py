"""An application's ORM flows through the dbguard proxy, as a masked subject (issue 24).

Usage: python3 sqlalchemy_flow.py URL SCHEMA ID. Prints one JSON object per flow:
{"flow": ..., "ok": bool, "sqlstate": ..., "message": ..., "shown": {...}}.

- "changed-columns": load a Customer, change its (unmasked) name, commit. SQLAlchemy's unit of work
  writes only the changed columns, so the masked email and ssn it was shown are never sent back.
- "every-column": the same, but every attribute is marked modified first, as ORMs that save the
  whole entity do (Django's save(), Hibernate without @DynamicUpdate): the masked forms go back to
  the server as parameters, and the save must fail loudly.
- "insert-new": new entities, batched by SQLAlchemy into one INSERT with RETURNING.
"""
import json
import sys

from sqlalchemy import Integer, String, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import flag_modified

url, schema, cid = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = {"schema": schema}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    email: Mapped[str] = mapped_column(String)
    ssn: Mapped[str] = mapped_column(String)


# psycopg 3 binds parameters on the server: the values travel in Bind messages (extended protocol)
engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def report(flow, fn):
    out = {"flow": flow, "ok": True}
    with Session(engine) as session:
        try:
            out["shown"] = fn(session)
            session.commit()
        except DBAPIError as e:
            session.rollback()
            out.update(ok=False, sqlstate=getattr(e.orig, "sqlstate", None), message=str(e.orig).strip())
    print(json.dumps(out), flush=True)


def changed_columns(session):
    c = session.get(Customer, cid)
    shown = {"email": c.email, "ssn": c.ssn}
    c.name = "Changed by SQLAlchemy"
    return shown


def every_column(session):
    c = session.get(Customer, cid)
    shown = {"email": c.email, "ssn": c.ssn}
    c.name = "Saved whole by SQLAlchemy"
    for attr in ("name", "email", "ssn"):
        flag_modified(c, attr)
    return shown


def insert_new(session):
    # two new entities at once: SQLAlchemy batches them (INSERT ... SELECT FROM VALUES ... RETURNING)
    session.add_all(
        [
            Customer(id=cid + 1, name="New One", email="new.one@example.org", ssn="111-11-1111"),
            Customer(id=cid + 2, name="New Two", email="new.two@example.org", ssn="222-22-2222"),
        ]
    )
    session.flush()
    return {}


report("changed-columns", changed_columns)
report("every-column", every_column)
report("insert-new", insert_new)
