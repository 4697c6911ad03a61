"""The environment's data store: signed-URL uploads and downloads, listing, multipart."""
