"""Small utilities for the entry points (logging set-up, config hygiene)."""
