"""Training recipes, one per model family; each reads top to bottom."""
