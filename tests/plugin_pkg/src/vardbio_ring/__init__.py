"""vardbio-ring: a model of 2-D points on a ring and an oracle of their angle."""
