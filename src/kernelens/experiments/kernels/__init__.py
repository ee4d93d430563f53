"""Classic kernel machine baselines (:mod:`.baselines`)."""
