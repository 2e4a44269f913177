"""Colour overlays with legends."""
