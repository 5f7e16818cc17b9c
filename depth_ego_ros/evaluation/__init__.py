"""Metrics (depth, trajectory), reports and plots."""
