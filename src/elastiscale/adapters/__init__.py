"""The outside world: metric sources that observe, actuators that act, and in-memory twins."""
