"""edgemart: the shared Lambda layer. Import the concept you need from its own module."""

__version__ = "0.1.0"
