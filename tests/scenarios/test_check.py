"""`syncd check`'s lock budget arithmetic (the online checks, through the real `syncd`, in
tests/acceptance/test_check.py)."""

from __future__ import annotations

from syncd.commands.check import lock_budget


def test_lock_budget_arithmetic():
    # PostgreSQL's defaults: 64 x (100 + 0) slots; 16 buckets, 2 indexes, 2 workers per gather
    budget = lock_budget(64, 100, 0, 2, 16, 2, 10, 16)
    assert budget["lock_slots"] == 6400
    assert budget["locks_per_country_join"] == 2 * (1 + 16 * 3) * 3 == 294
    assert budget["locks_syncd_peak"] == 16 * 10 * 5 == 800
    assert budget["country_joins_that_fit"] == (6400 - 800) // 294 == 19
    assert lock_budget(64, 100, 0, 2, 64, 3, 10, 16)["country_joins_that_fit"] == 3
