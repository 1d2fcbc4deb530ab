"""Shared model machinery: backbones, heads, freeze plans, stages."""
