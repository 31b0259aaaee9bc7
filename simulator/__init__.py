"""Local stand-ins for the vendor clouds, for tests and for developing against without real accounts."""
