"""Thin Lambda entry points: parse the event, call signalcraft_core, write records, return a summary."""
