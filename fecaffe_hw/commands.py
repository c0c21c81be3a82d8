"""Subcommand registrations; each command's work lives in its own module."""
