"""Speech engines behind one interface (:mod:`.base`); Piper is the first."""
