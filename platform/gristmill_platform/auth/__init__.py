"""Authentication: SDK (refresh) tokens, short-lived access tokens, principals."""
