"""What was learned and how it decides: rules, both levels and their numpy engines, calibration, grades, model sets."""
