"""Feldera SQL on Stopcock's embedded SQLite engine.

A pipeline's program is Feldera SQL (Calcite's dialect as Feldera extends
it). It is parsed with sqlglot (dialect: `dialect`), checked and described
in Feldera's terms (`compiler`, `types`, `messages`), and translated into
SQLite DDL that the runtime loads (`compiler.Compiled.sqlite_ddl`). Ad-hoc
queries are translated the same way (`adhoc`).
"""
