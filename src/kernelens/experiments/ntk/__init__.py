"""Empirical NTK experiments: the spectrum sets the learning speed (:mod:`.spectrum_speed`)."""
