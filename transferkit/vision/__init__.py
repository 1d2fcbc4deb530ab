"""Shared image machinery of the image plugins: decoding, header checks, resizing, their preprocessor."""
