// Placeholder translation unit for a library area that has no sources yet.
