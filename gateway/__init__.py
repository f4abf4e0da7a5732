"""parentgate: an email gateway that applies a school's home-school communication policy."""

__version__ = "0.1.0"
