"""Replaying history through policies: the pipeline simulator, baselines, scoring and reports."""
