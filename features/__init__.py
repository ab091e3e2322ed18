"""chatcore features plugins."""
