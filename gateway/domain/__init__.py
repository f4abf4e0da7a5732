"""Pure domain types: states, message facts, findings, plans and the school calendar. No I/O here."""
