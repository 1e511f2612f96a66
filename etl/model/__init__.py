"""The model before it is loaded: where its files are (locate) and what it is (facts)."""
