"""Data stages: crawl, resize, smooth, and the embedded default data."""
