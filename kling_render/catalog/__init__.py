"""The model catalog: built-in models (data/models.yaml), declared models, price checks."""
