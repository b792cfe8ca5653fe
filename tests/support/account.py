"""The account and API key every test's simulator and watcher agree on."""

KEY = "test-api-key-0123456789"
ACCOUNT = "acme"
