"""Signal processing: the spectral pass, log-mel features, Level-1 descriptors, signal statistics."""
