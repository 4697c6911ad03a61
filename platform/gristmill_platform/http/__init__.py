"""HTTP helpers shared by the domain routes."""
