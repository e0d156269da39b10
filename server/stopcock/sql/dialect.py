"""Feldera's SQL dialect for sqlglot: what Feldera's parser accepts beyond sqlglot's default.

- `CREATE LOCAL VIEW` and `CREATE RECURSIVE VIEW` (sqlglot's default dialect
  falls back to an unparsed Command for both): parsed as CREATE VIEW with a
  marker property.
- Postfix collection types, `VARCHAR ARRAY`, `INT ARRAY ARRAY` (Calcite's
  syntax): sqlglot's default parser reads what follows `ARRAY` inside a column
  list as array bounds, so the postfix is taken here instead.
- Column attributes `LATENESS expr` and `WATERMARK expr`: parsed so that the
  compiler can refuse them by name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlglot import exp, parser
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokenizer_core import TokenType
from sqlglot.tokens import Tokenizer as BaseTokenizer

LOCAL = "local"
RECURSIVE = "recursive"


def marker(name: str) -> exp.Property:
    """A property that records a CREATE modifier (LOCAL, RECURSIVE) on the statement."""
    return exp.Property(this=exp.var(name), value=exp.true())


def _column_attribute(keyword: str) -> Any:
    """LATENESS or WATERMARK on a column, kept as a property named after the keyword."""

    def parse(self: FelderaParser) -> exp.Expr:
        return exp.Property(this=exp.var(keyword.lower()), value=self._parse_bitwise())

    return parse


class FelderaParser(parser.Parser):
    PROPERTY_PARSERS: ClassVar[dict[str, Any]] = {
        **parser.Parser.PROPERTY_PARSERS,
        "LOCAL": lambda self: marker(LOCAL),
        "RECURSIVE": lambda self: marker(RECURSIVE),
    }
    CONSTRAINT_PARSERS: ClassVar[dict[str, Any]] = {
        **parser.Parser.CONSTRAINT_PARSERS,
        "LATENESS": _column_attribute("LATENESS"),
        "WATERMARK": _column_attribute("WATERMARK"),
    }

    STATEMENT_PARSERS: ClassVar[dict[Any, Any]] = {
        **parser.Parser.STATEMENT_PARSERS,
        TokenType.DECLARE: lambda self: self._parse_declare_recursive_view(),
    }

    def _parse_declare_recursive_view(self) -> exp.Expr:
        """`DECLARE RECURSIVE VIEW name (columns)`: kept as a CREATE VIEW marked RECURSIVE."""
        if not self._match_text_seq("RECURSIVE", "VIEW"):
            self.raise_error('Encountered "DECLARE": only DECLARE RECURSIVE VIEW is known')
        name = self._parse_table_parts(schema=True)
        schema = self._parse_schema(this=name)
        return self.expression(
            exp.Create(
                this=schema,
                kind="VIEW",
                properties=exp.Properties(expressions=[marker(RECURSIVE)]),
            )
        )

    def _parse_as_command(self, start: Any) -> exp.Command:
        # sqlglot keeps what it cannot parse as an opaque command; a program
        # must parse, so that is a syntax error at the token it stopped on.
        token = self._curr or self._prev or start
        self.raise_error(f'Encountered "{token.text}"', token)
        return super()._parse_as_command(start)

    _in_type = 0  # > 0 while sqlglot parses a type (see _match)

    def _match(self, token_type: TokenType, advance: bool = True, expression: Any = None) -> Any:
        # Within a type, sqlglot reads a postfix ARRAY as the start of bounds
        # (`INT ARRAY[3]`) and then takes what follows for them; Calcite's
        # postfix ARRAY is taken by _parse_types instead.
        if token_type == TokenType.ARRAY and self._in_type:
            return None
        return super()._match(token_type, advance, expression)

    def _parse_types(
        self,
        check_func: bool = False,
        schema: bool = False,
        allow_identifiers: bool = True,
        with_collation: bool = False,
    ) -> exp.Expr | None:
        self._in_type += 1
        try:
            this = super()._parse_types(
                check_func=check_func,
                schema=schema,
                allow_identifiers=allow_identifiers,
                with_collation=with_collation,
            )
        finally:
            self._in_type -= 1
        while isinstance(this, exp.DataType) and super()._match(TokenType.ARRAY):
            this = exp.DataType(this=exp.DType.ARRAY, expressions=[this], nested=True)
        return this


class Feldera(Dialect):
    class Tokenizer(BaseTokenizer):
        KEYWORDS: ClassVar[dict[str, Any]] = {
            **BaseTokenizer.KEYWORDS,
            "DECLARE": TokenType.DECLARE,
        }

    class Parser(FelderaParser):
        pass


class SQLiteTarget(SQLite):
    """SQLite, with identifiers quoted in backticks.

    SQLite takes a double-quoted name that matches no column for a string
    literal ("b" in `SELECT "b" FROM t` is the text 'b'), which would hide a
    misspelt column; a backticked name is always an identifier.
    """

    class Tokenizer(SQLite.Tokenizer):
        IDENTIFIERS: ClassVar[list[Any]] = ["`", '"', ("[", "]")]  # the first one quotes
