"""Jinja2 templates: reply texts for residents and the pages of the web apps."""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
