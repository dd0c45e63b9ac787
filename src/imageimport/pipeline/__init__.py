"""The import pipeline: plan a folder, process each file."""
