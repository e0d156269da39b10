"""A compiled program's relations, in the shapes Feldera's compiler prints them.

Names follow Feldera's rules (feldera_types::program_schema::SqlIdentifier):
unquoted identifiers are case-insensitive and reported lowercased, quoted
ones are case-sensitive and kept as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp
from stopcock.sql.messages import Message, Span

JsonObject = dict[str, Any]


def canonical(ident: exp.Identifier) -> tuple[str, bool]:
    """(name, case_sensitive) by Feldera's rules: unquoted names are lowercased."""
    if ident.quoted:
        return ident.this, True
    return ident.this.lower(), False


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def span_of(code: str, node: exp.Expr | None) -> Span:
    """Where sqlglot found `node` (its identifier or literal token), if it knows."""
    while node is not None:
        meta = node.meta if node.meta else {}
        if "start" in meta and "end" in meta:
            return Span.of_offsets(code, meta["start"], meta["end"])
        node = node.this if isinstance(node.this, exp.Expr) else None
    return Span()


@dataclass(slots=True)
class Field:
    name: str
    case_sensitive: bool
    columntype: JsonObject
    default: str | None = None

    def to_json(self) -> JsonObject:
        """As Feldera's compiler prints a column (IHasSchema.asJson)."""
        out: JsonObject = {
            "name": self.name,
            "case_sensitive": self.case_sensitive,
            "columntype": self.columntype,
        }
        if self.default is not None:
            out["default"] = self.default
        out["unused"] = False
        return out


@dataclass(slots=True)
class Relation:
    name: str
    case_sensitive: bool
    kind: str  # "table", "view" or "local"
    materialized: bool
    sqlite_ddl: str
    fields: list[Field] = field(default_factory=list)
    properties: dict[str, JsonObject] = field(default_factory=dict)
    primary_key: list[str] | None = None

    def to_json(self) -> JsonObject:
        """As Feldera's compiler prints a relation (IHasSchema, CreateTableStatement and
        CreateViewStatement asJson): optional members only when the program gave them."""
        out: JsonObject = {
            "name": self.name,
            "case_sensitive": self.case_sensitive,
            "fields": [f.to_json() for f in self.fields],
        }
        if self.primary_key is not None:
            out["primary_key"] = self.primary_key
        if self.properties:
            out["properties"] = self.properties
        out["materialized"] = self.materialized
        if self.kind == "table":
            out["foreign_keys"] = []
        return out


@dataclass(slots=True)
class Compiled:
    """A compiled program: its relations in declaration order, and its SQLite DDL."""

    relations: list[Relation] = field(default_factory=list)
    sqlite_ddl: list[str] = field(default_factory=list)
    warnings: list[Message] = field(default_factory=list)

    def find(self, name: str, case_sensitive: bool) -> Relation | None:
        """The relation a reference names, by Feldera's rules (SqlIdentifier's equality)."""
        for rel in self.relations:
            if rel.case_sensitive or case_sensitive:
                if rel.name == name:
                    return rel
            elif rel.name == name.lower():
                return rel
        return None

    def program_info(self) -> JsonObject:
        inputs = [r.to_json() for r in self.relations if r.kind == "table"]
        outputs = [r.to_json() for r in self.relations if r.kind == "view"]
        return {
            "schema": {"inputs": inputs, "outputs": outputs},
            "main_rust": "",
            "udf_stubs": "",
            "dataflow": None,
            "input_connectors": {},
            "output_connectors": {},
        }
