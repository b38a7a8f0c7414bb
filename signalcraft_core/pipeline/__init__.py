"""Recordings in, grade records out: the one pipe behind every handler, its records and sinks."""
