"""syncd's tests, in three lanes by what they start: see tests/README.md."""
