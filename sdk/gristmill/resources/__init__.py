"""Client methods, one module per API area, mixed into ``gristmill.Gristmill``."""
