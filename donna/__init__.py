"""donna package."""
