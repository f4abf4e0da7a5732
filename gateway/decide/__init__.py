"""Decide: findings, the school calendar and `now` in, a plan out. Pure: no I/O here."""
