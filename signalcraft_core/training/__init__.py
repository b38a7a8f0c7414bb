"""Fit both levels on normal sound, calibrate out of fold, export the artifacts (needs torch and scikit-learn)."""
