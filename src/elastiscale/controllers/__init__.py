"""Policies (what each component should have) and constraints (what it may have)."""
