"""Marks the shipped rules as the package `gateway._rules`, so that they install with parentgate. Not a rule file."""
