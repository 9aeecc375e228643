"""Unit lane: no process of syncd, no browser or other tool; a small real PostgreSQL at most."""
