"""The Head of School's web console: reads through store query functions, writes only through services."""
