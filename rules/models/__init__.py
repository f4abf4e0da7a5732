"""Marks the shipped learned model as the package `gateway._rules.models`, so that it installs with parentgate. Not a model file."""
