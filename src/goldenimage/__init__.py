"""goldenimage: build once, deploy many, never mutate."""

__version__ = "0.1.0"
