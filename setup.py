"""Installable package: ``pip install -r requirements.txt -e .``.

Metadata lives in pyproject.toml; this file exists for tools and users that
still call ``setup.py`` directly.
"""

from setuptools import setup

setup()
