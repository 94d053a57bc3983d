"""Storage backends and the protocol they implement."""
