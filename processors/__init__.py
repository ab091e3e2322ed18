"""chatcore processors plugins."""
