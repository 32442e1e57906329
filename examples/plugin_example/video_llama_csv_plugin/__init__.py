"""Example plugin package; the registrations live in csv_actions.py (named by the entry point)."""
