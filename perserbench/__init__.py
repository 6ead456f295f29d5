"""perserbench: a benchmark for listener-personalized speech emotion recognition."""

__version__ = "0.1.0"
