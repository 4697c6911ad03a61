"""Users as the SDK sees them (who_am_i, get_user)."""
