"""Exposure API: per-counterparty flows of a Bitcoin address, served from PostgreSQL."""

__version__ = "1.0.0"
