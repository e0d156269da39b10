"""Compiling a Feldera SQL program: checking it, describing it, translating it to SQLite.

Statements are taken in order, as Feldera's compiler does: a view may read
the tables and views declared before it. Each one is translated to SQLite
DDL and run on a scratch in-memory database (under the DDL-only authorizer
of stopcock.program), so SQLite's own checks (unknown columns, functions it
lacks) fail the compilation of the statement that needs them.

Names follow Feldera's rules (feldera_types::program_schema::SqlIdentifier):
unquoted identifiers are case-insensitive and reported lowercased, quoted
ones are case-sensitive and kept as written. SQLite compares identifiers
case-insensitively even when quoted, so two names differing only by case
cannot both be stored: that is a compile error naming both.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.tokenizer_core import Token, TokenType
from stopcock.sql import types
from stopcock.sql.dialect import LOCAL, RECURSIVE, Feldera
from stopcock.sql.messages import NOT_SUPPORTED, PARSE_ERROR, CompileError, Message, Span
from stopcock.sql.schema import Compiled, Field, Relation, canonical, quote, span_of
from stopcock.sql.translate import translate

JsonObject = dict[str, Any]

# sqlglot logs a warning for each statement it keeps unparsed; those are compile errors here.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def _check_lists(code: str, tokens: list[Token]) -> None:
    """Refuses empty list items (`(a INT,,)`, `(a INT,)`), which sqlglot's parser skips."""
    for before, after in itertools.pairwise(tokens):
        if before.token_type == TokenType.COMMA and after.token_type in (
            TokenType.COMMA,
            TokenType.R_PAREN,
        ):
            raise CompileError(
                Message(
                    f'Encountered "{after.text}" at line {after.line}, column {after.col}',
                    Span.of_offsets(code, after.start, after.end),
                    PARSE_ERROR,
                )
            )


def _refuse_lateness_statements(tokens: list[Token]) -> None:
    """Feldera's statement `LATENESS view.column expr;` (lateness on a view's column) has no
    counterpart here: refused by name, found with sqlglot's own tokenizer."""
    at_start = True
    for i, tok in enumerate(tokens):
        if at_start and tok.token_type == TokenType.VAR and tok.text.upper() == "LATENESS":
            target = "".join(
                t.text
                for t in itertools.takewhile(
                    lambda t: t.token_type in (TokenType.VAR, TokenType.DOT), tokens[i + 1 : i + 4]
                )
            )
            start = max(tok.col - len(tok.text) + 1, 1)
            raise CompileError(
                Message(
                    f"LATENESS (on '{target}') is not supported by Stopcock's engine",
                    Span(tok.line, start, tok.line, tok.col),
                    NOT_SUPPORTED,
                )
            )
        at_start = tok.token_type == TokenType.SEMICOLON


def _parse(code: str) -> list[exp.Expr]:
    # Tokenized once for the checks and the parser: sqlglot's tokenizer is pure Python, about
    # 8 MB/s here, and a program may be as large as a request (64 MiB, mostly comments).
    dialect = Feldera()
    try:
        tokens = dialect.tokenize(code)
        _check_lists(code, tokens)
        _refuse_lateness_statements(tokens)
        return [s for s in dialect.parser().parse(tokens, code) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line, col = first.get("line") or 0, first.get("col") or 0
        description = first.get("description") or str(exc)
        token = first.get("highlight") or ""
        if " <Token " in description:  # sqlglot prints the token's repr: its text will do
            description = description.split(" <Token ")[0] + f' "{token}"'
        start = max(col - len(token) + 1, 1) if line else 0
        raise CompileError(
            Message(
                f"{description} at line {line}, column {start}",
                Span(line, start, line, col),
                PARSE_ERROR,
            )
        ) from None
    except SqlglotError as exc:
        raise CompileError(Message(str(exc), Span(), PARSE_ERROR)) from None


def _property_position(code: str, node: exp.Expr) -> JsonObject:
    span = span_of(code, node)
    return {
        "start_line_number": span.start_line,
        "start_column": span.start_column,
        "end_line_number": span.end_line,
        "end_column": span.end_column,
    }


class _Compiler:
    def __init__(self, code: str, db: sqlite3.Connection, run: Callable[[str], None]) -> None:
        self.code = code
        self.db = db
        self.run = run
        self.out = Compiled()
        # Feldera's name -> the relation; lowercased name -> the name (SQLite's clashes)
        self._folded: dict[str, str] = {}

    def fail(
        self, message: str, node: exp.Expr | None = None, error_type: str | None = None
    ) -> None:
        span = span_of(self.code, node)
        raise CompileError(
            Message(message, span, error_type) if error_type else Message(message, span)
        )

    # -- names ----------------------------------------------------------------

    def _claim(self, ident: exp.Identifier, what: str) -> tuple[str, bool]:
        name, case_sensitive = canonical(ident)
        existing = self.out.find(name, case_sensitive)
        if existing is not None and existing.name == name:
            self.fail(f"Duplicate declaration of {what} '{name}'", ident)
        clash = self._folded.get(name.lower())
        if clash is not None:
            self.fail(
                f"{what.capitalize()} {quote(name)} and {quote(clash)} differ only in case: "
                "Stopcock's SQLite engine compares names case-insensitively, so it cannot "
                "hold both",
                ident,
            )
        self._folded[name.lower()] = name
        return name, case_sensitive

    def _columns_distinct(self, fields: list[Field], relation: str, nodes: list[exp.Expr]) -> None:
        seen: dict[str, str] = {}
        for f, node in zip(fields, nodes, strict=False):
            other = seen.get(f.name.lower())
            if other == f.name:
                self.fail(f"Column '{f.name}' is declared twice in '{relation}'", node)
            if other is not None:
                self.fail(
                    f"Columns {quote(f.name)} and {quote(other)} of '{relation}' differ only in "
                    "case: Stopcock's SQLite engine compares names case-insensitively, so it "
                    "cannot hold both",
                    node,
                )
            seen[f.name.lower()] = f.name

    # -- properties ------------------------------------------------------------

    def _properties(
        self, props: exp.Properties | None, relation: str
    ) -> tuple[dict[str, JsonObject], set[str]]:
        """WITH ('key' = 'value', ...) as Feldera's PropertyValue map; and the markers."""
        out: dict[str, JsonObject] = {}
        markers: set[str] = set()
        connectors_node: exp.Expr | None = None
        for prop in props.expressions if props is not None else []:
            if isinstance(prop, exp.MaterializedProperty):
                markers.add("materialized")
                continue
            if isinstance(prop, exp.Property) and isinstance(prop.this, exp.Var):
                markers.add(prop.this.name.lower())
                continue
            key, value = prop.this, prop.args.get("value")
            if not (isinstance(prop, exp.Property) and isinstance(key, exp.Literal)):
                self.fail(f"Unsupported property {prop.sql()} on '{relation}'", prop, NOT_SUPPORTED)
            if not (isinstance(value, exp.Literal) and value.is_string):
                self.fail(f"The value of property '{key.name}' must be a string", prop)
            assert isinstance(value, exp.Literal)
            if key.name == "connectors":
                connectors_node = value
            out[key.name] = {
                "value": value.name,
                "key_position": _property_position(self.code, key),
                "value_position": _property_position(self.code, value),
            }
        if "connectors" in out:
            self._refuse_connectors(relation, out["connectors"]["value"], connectors_node)
        return out, markers

    def _refuse_connectors(self, relation: str, value: str, node: exp.Expr | None) -> None:
        try:
            connectors = json.loads(value)
        except ValueError as exc:
            self.fail(f"The 'connectors' property of '{relation}' is not valid JSON: {exc}", node)
        if not isinstance(connectors, list):
            self.fail(f"The 'connectors' property of '{relation}' must be a JSON array", node)
        if not connectors:
            return
        transports = []
        for connector in connectors:
            transport = connector.get("transport") if isinstance(connector, dict) else None
            name = transport.get("name") if isinstance(transport, dict) else None
            transports.append(str(name) if name is not None else "<no transport name>")
        self.fail(
            f"Connectors are not supported by Stopcock's engine yet: '{relation}' declares "
            f"{', '.join(repr(t) for t in transports)}; remove the 'connectors' property and "
            "push data through the HTTP API",
            node,
            NOT_SUPPORTED,
        )

    # -- statements -------------------------------------------------------------

    def statement(self, stmt: exp.Expr) -> None:
        if isinstance(stmt, exp.Semicolon):
            return
        if isinstance(stmt, exp.Create):
            kind = (stmt.args.get("kind") or "").upper()
            if kind == "TABLE":
                return self.table(stmt)
            if kind == "VIEW":
                return self.view(stmt)
            if kind == "INDEX":
                return self.index(stmt)
            if kind == "FUNCTION":
                udf = stmt.this
                name = udf.this.name if isinstance(udf, exp.UserDefinedFunction) else udf.sql()
                has_body = stmt.expression is not None
                self.fail(
                    f"User-defined function '{name}' is not supported by Stopcock's engine"
                    + ("" if has_body else " (a function without a body is a Rust UDF)"),
                    udf,
                    NOT_SUPPORTED,
                )
            self.fail(
                f"CREATE {kind} is not supported by Stopcock's engine", stmt.this, NOT_SUPPORTED
            )
        words = stmt.sql(dialect=Feldera).split()
        what = " ".join(words[:2]) if words else type(stmt).__name__
        if isinstance(stmt, exp.Command):  # sqlglot could not parse it
            what = " ".join(f"{stmt.this} {stmt.expression or ''}".split())
        self.fail(
            f"Unsupported statement '{what}': a program declares tables "
            "(CREATE TABLE), views (CREATE [MATERIALIZED | LOCAL] VIEW) and indexes",
            None,
            PARSE_ERROR,
        )

    def table(self, stmt: exp.Create) -> None:
        schema = stmt.this
        if not isinstance(schema, exp.Schema) or not isinstance(schema.this, exp.Table):
            self.fail("CREATE TABLE needs a column list", stmt)
        ident = schema.this.this
        name, case_sensitive = self._claim(ident, "table")
        properties, markers = self._properties(stmt.args.get("properties"), name)
        columns: list[tuple[Field, str]] = []
        nodes: list[exp.Expr] = []
        pk: list[str] | None = None
        for item in schema.expressions:
            if isinstance(item, exp.PrimaryKey):
                pk = [
                    canonical(i)[0] if isinstance(i, exp.Identifier) else i.name
                    for i in item.expressions
                ]
            elif isinstance(item, exp.ForeignKey | exp.Constraint):
                continue  # Feldera checks neither; it only documents them
            elif isinstance(item, exp.ColumnDef) and isinstance(item.kind, exp.DataType):
                column, stored, in_pk = self._column(item, item.kind, name)
                columns.append((column, stored))
                nodes.append(item.this)
                if in_pk:
                    pk = [*(pk or []), column.name]
            else:
                self.fail(
                    f"Unsupported table element {item.sql()} in '{name}'", item, NOT_SUPPORTED
                )
        fields = [column for column, _ in columns]
        self._columns_distinct(fields, name, nodes)
        for key in pk or []:
            if key not in {f.name for f in fields}:
                self.fail(f"PRIMARY KEY column '{key}' is not a column of '{name}'", schema)
        for f in fields:  # a key column is NOT NULL (Calcite)
            f.columntype["nullable"] = f.columntype["nullable"] and f.name not in (pk or [])
        sqlite_cols = [
            f"{quote(f.name)} {stored}{'' if f.columntype['nullable'] else ' NOT NULL'}"
            for f, stored in columns
        ]
        if pk:
            sqlite_cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in pk)})")
        ddl = f"CREATE TABLE {quote(name)} ({', '.join(sqlite_cols)})"
        self._run(ddl, ident)
        materialized = properties.get("materialized", {}).get("value") == "true"
        self.out.relations.append(
            Relation(
                name,
                case_sensitive,
                "table",
                materialized or "materialized" in markers,
                ddl,
                fields,
                properties,
                pk,
            )
        )

    def _column(
        self, item: exp.ColumnDef, dtype: exp.DataType, table: str
    ) -> tuple[Field, str, bool]:
        """A column: its Field, its SQLite declared type, whether it is a PRIMARY KEY."""
        col, col_cs = canonical(item.this)
        nullable, default, in_pk = True, None, False
        for constraint in item.constraints:
            kind = constraint.args.get("kind")
            if isinstance(kind, exp.NotNullColumnConstraint):
                nullable = bool(kind.args.get("allow_null"))
            elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
                in_pk = True
            elif isinstance(kind, exp.DefaultColumnConstraint):
                default = kind.this.sql(dialect=Feldera)
            elif isinstance(kind, exp.Property) and isinstance(kind.this, exp.Var):
                self.fail(
                    f"{kind.this.name.upper()} (on column '{col}' of '{table}') is not "
                    "supported by Stopcock's engine",
                    item.this,
                    NOT_SUPPORTED,
                )
            elif not isinstance(kind, exp.Properties):  # column WITH: not in Feldera's schema
                self.fail(
                    f"Unsupported column constraint {constraint.sql()} on '{col}'",
                    item.this,
                    NOT_SUPPORTED,
                )
        try:
            columntype = types.column_type(dtype, nullable)
            stored = types.sqlite_type(dtype)
        except types.UnsupportedType as exc:
            self.fail(
                f"Column '{col}' of '{table}' has a {exc} that Stopcock's engine cannot store",
                item,
                NOT_SUPPORTED,
            )
        return Field(col, col_cs, columntype, default), stored, in_pk

    def _translate_query(self, query: exp.Expr) -> str:
        """The query in SQLite's SQL, every name canonical and quoted (see sql.adhoc too)."""
        return translate(self.out, query, self.fail, self.code)

    def view(self, stmt: exp.Create) -> None:
        target = stmt.this
        columns: list[exp.Expr] = []
        if isinstance(target, exp.Schema):
            columns = list(target.expressions)
            target = target.this
        assert isinstance(target, exp.Table)
        ident = target.this
        name, case_sensitive = self._claim(ident, "view")
        properties, markers = self._properties(stmt.args.get("properties"), name)
        if RECURSIVE in markers:
            self.fail(
                f"Recursive view '{name}' is not supported by Stopcock's engine",
                ident,
                NOT_SUPPORTED,
            )
        query = stmt.expression
        if query is None:
            self.fail(f"View '{name}' has no query", ident)
        body = self._translate_query(query)
        col_list = ""
        if columns:
            col_list = (
                " ("
                + ", ".join(
                    quote(canonical(c)[0]) for c in columns if isinstance(c, exp.Identifier)
                )
                + ")"
            )
        ddl = f"CREATE VIEW {quote(name)}{col_list} AS {body}"
        self._run(ddl, ident)
        try:
            self.db.execute(f"SELECT * FROM {quote(name)} LIMIT 0").close()
        except sqlite3.Error as exc:
            self._view_failed(name, query, ident, str(exc))
        fields = self._view_fields(name, query, columns)
        nodes: list[exp.Expr] = [ident] * len(fields)
        self._columns_distinct(fields, name, nodes)
        kind = "local" if LOCAL in markers else "view"
        self.out.relations.append(
            Relation(name, case_sensitive, kind, "materialized" in markers, ddl, fields, properties)
        )

    def _view_failed(self, name: str, query: exp.Expr, ident: exp.Expr, error: str) -> None:
        """SQLite refused the view's query: in Calcite's words where they are known."""
        if error.startswith("no such column: "):
            wanted = error.removeprefix("no such column: ").rsplit(".", 1)[-1]
            for ref in query.find_all(exp.Column):
                if isinstance(ref.this, exp.Identifier) and canonical(ref.this)[0] == wanted:
                    where = span_of(self.code, ref.this).calcite_prefix()
                    self.fail(f"{where}Column '{ref.this.this}' not found in any table", ref.this)
        if error.startswith("no such function: "):
            function = error.removeprefix("no such function: ")
            self.fail(
                f"View '{name}' calls {function}, a function Stopcock's SQLite engine lacks",
                ident,
                NOT_SUPPORTED,
            )
        self.fail(f"View '{name}': {error}", ident)

    def _view_fields(self, name: str, query: exp.Expr, columns: list[exp.Expr]) -> list[Field]:
        """The view's columns; a column read straight from a relation keeps its Feldera type."""
        rows = self.db.execute("SELECT name, type FROM pragma_table_info(?)", (name,)).fetchall()
        sources = self._direct_sources(query)
        fields = []
        for i, (col, declared) in enumerate(rows):
            source = sources[i] if i < len(sources) else None
            if source is not None:
                columntype = dict(source.columntype)
            else:
                columntype = {"type": types.from_sqlite(declared), "nullable": True}
            alias = columns[i] if i < len(columns) else None
            if isinstance(alias, exp.Identifier):
                case_sensitive = bool(alias.quoted)
            else:  # named by SQLite after the query's names, already canonical
                case_sensitive = col != col.lower()
            fields.append(Field(col, bool(case_sensitive), columntype))
        return fields

    def _direct_sources(self, query: exp.Expr) -> list[Field | None]:
        if not isinstance(query, exp.Select):
            return []
        scope = [
            rel
            for t in query.find_all(exp.Table)
            if isinstance(t.this, exp.Identifier)
            and (rel := self.out.find(*canonical(t.this))) is not None
        ]
        out: list[Field | None] = []
        for proj in query.expressions:
            inner = proj.this if isinstance(proj, exp.Alias) else proj
            if isinstance(inner, exp.Star):
                out.extend(f for rel in scope for f in rel.fields)
                continue
            found = None
            if isinstance(inner, exp.Column) and isinstance(inner.this, exp.Identifier):
                col = canonical(inner.this)[0]
                for rel in scope:
                    found = next((f for f in rel.fields if f.name == col), None) or found
            out.append(found)
        return out

    def index(self, stmt: exp.Create) -> None:
        index = stmt.this
        if not isinstance(index, exp.Index) or not isinstance(index.this, exp.Identifier):
            self.fail("Unsupported CREATE INDEX", stmt)
        name = canonical(index.this)[0]
        table = index.args.get("table")
        if not isinstance(table, exp.Table):
            self.fail(f"Index '{name}' names no table or view", index)
        rel = self.out.find(*canonical(table.this))
        if rel is None:
            self.fail(f"Object '{table.name}' not found", table)
        assert rel is not None
        if rel.kind != "table":
            return  # Feldera indexes views for lookups; SQLite computes views on read
        params = index.args.get("params")
        cols = [
            quote(canonical(c.this.this)[0])
            for c in (params.args.get("columns") or [] if params is not None else [])
            if isinstance(c, exp.Ordered) and isinstance(c.this, exp.Column)
        ]
        self._run(
            f"CREATE INDEX {quote(name)} ON {quote(rel.name)} ({', '.join(cols)})", index.this
        )

    def _run(self, ddl: str, node: exp.Expr | None) -> None:
        try:
            self.run(ddl)
        except sqlite3.Error as exc:
            self.fail(f"{exc}", node)
        self.out.sqlite_ddl.append(ddl)


def compile_to(code: str, db: sqlite3.Connection, run: Callable[[str], None]) -> Compiled:
    """Compiles `code`, running its SQLite DDL through `run` on `db` (raises CompileError)."""
    compiler = _Compiler(code, db, run)
    for stmt in _parse(code):
        compiler.statement(stmt)
    return compiler.out
