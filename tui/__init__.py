"""chatcore tui plugins."""
