"""Environment variables exposed to every execution."""
