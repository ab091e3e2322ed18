"""chatcore backends plugins."""
