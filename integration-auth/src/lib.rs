//! Authentication for HTTP API calls as a tower layer (API keys, Basic, bearer, OAuth 2.0, JWT): filled by its own issue.
