"""How well it works and why a recording got its grade: evaluation, fleet report, explanations."""
