"""Bytes in and out: WAV decoding, the object store, trigger events, the key layout."""
