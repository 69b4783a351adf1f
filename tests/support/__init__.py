"""Synthetic test fixtures (videos) for the deepscreen test suite."""
