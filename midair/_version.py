"""The version, in a module of its own so the core can name it without importing the API."""

__version__ = "0.1.0"
