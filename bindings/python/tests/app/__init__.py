"""A PyView application with a counter shared by every page, for the integration tests."""
