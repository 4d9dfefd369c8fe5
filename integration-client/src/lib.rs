//! The facade client: transport, named APIs, the request builder and stack assembly: filled by its own issue.
