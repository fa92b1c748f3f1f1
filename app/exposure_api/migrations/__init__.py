"""Versioned SQL migrations (NNNN_name.sql). See exposure_api.migrate for the rules."""
