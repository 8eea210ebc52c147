"""Measurements of procreche on real servers (see bench/capacity.py)."""
